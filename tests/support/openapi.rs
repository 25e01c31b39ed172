//! `docs/openapi.yaml` for the tests: its operations, and validators for
//! the JSON Schemas of their request and response bodies (JSON Schema
//! 2020-12, as OpenAPI 3.1 uses it, with the `jsonschema` crate).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// The OpenAPI file, as JSON.
pub struct Spec {
    pub doc: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

/// Where the file is, for messages.
pub const FILE: &str = "docs/openapi.yaml";

impl Spec {
    pub fn load() -> Self {
        let text = include_str!("../../docs/openapi.yaml");
        let doc: Value = serde_norway::from_str(text)
            .unwrap_or_else(|err| panic!("{FILE} is not valid YAML: {err}"));
        Self {
            doc,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The operation for `method` (any case) and the path template, if any.
    pub fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        self.doc["paths"]
            .get(path)?
            .get(method.to_ascii_lowercase())
    }

    /// Every (METHOD, path) the file documents.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                if HTTP_METHODS.contains(&method.as_str()) {
                    all.push((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        all
    }

    /// What a local `$ref` (`#/components/...`) points at.
    pub fn pointer(&self, reference: &str) -> Option<&Value> {
        self.doc.pointer(reference.strip_prefix('#')?)
    }

    /// `value`, or what it refers to when it is a `$ref` (OpenAPI's reusable
    /// parameters and responses).
    pub fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .pointer(reference)
                .unwrap_or_else(|| panic!("{FILE}: {reference} does not resolve")),
            None => value,
        }
    }

    /// The operation's parameters (path-level and operation-level), resolved.
    pub fn parameters<'a>(&'a self, path: &str, operation: &'a Value) -> Vec<&'a Value> {
        let shared = self.doc["paths"][path]["parameters"].as_array();
        let own = operation["parameters"].as_array();
        shared
            .into_iter()
            .chain(own)
            .flatten()
            .map(|parameter| self.resolve(parameter))
            .collect()
    }

    /// The JSON schema of the answer `status` of `METHOD path`, if it has a
    /// JSON body: `Err` with why when the file does not document it.
    pub fn response_schema(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<Option<&Value>, String> {
        let operation = self
            .operation(method, path)
            .ok_or_else(|| format!("{FILE} does not document {method} {path}"))?;
        let response = operation["responses"]
            .get(status.to_string())
            .map(|response| self.resolve(response))
            .ok_or_else(|| {
                format!("{FILE}: {method} {path} does not document the answer {status}")
            })?;
        Ok(response["content"]
            .get("application/json")
            .map(|json| &json["schema"]))
    }

    /// The JSON schema of the JSON request body of `METHOD path`, if any.
    pub fn request_schema(&self, method: &str, path: &str) -> Option<&Value> {
        let operation = self.operation(method, path)?;
        let body = self.resolve(operation.get("requestBody")?);
        body["content"]
            .get("application/json")
            .map(|json| &json["schema"])
    }

    /// Checks `instance` against `schema` (a schema of this file: its
    /// `$ref`s point into its components). `Err` lists every violation.
    pub fn check(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let validator = self.validator(schema)?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|err| format!("at '{}': {err}", err.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// A validator for `schema`, compiled once: a JSON Schema 2020-12 whose
    /// root carries the file's components, so `#/components/...` resolves.
    pub fn validator(
        &self,
        schema: &Value,
    ) -> Result<std::sync::Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        let mut cache = self.validators.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(validator) = cache.get(&key) {
            return Ok(validator.clone());
        }
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.doc["components"],
        });
        let validator = jsonschema::draft202012::options()
            .build(&root)
            .map_err(|err| format!("{FILE}: a schema does not compile: {err}: {schema}"))?;
        let validator = std::sync::Arc::new(validator);
        cache.insert(key, validator.clone());
        Ok(validator)
    }
}

pub const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every `$ref` in `value`, with where it is.
pub fn references(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    if let Some(reference) = child.as_str() {
                        out.push((at.to_owned(), reference.to_owned()));
                    }
                } else {
                    references(child, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                references(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}
