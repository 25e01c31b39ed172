//! Checking a file before the bridge puts it in the homeserver's media
//! repository: its declared `Content-Type` must be on the allow-list and
//! agree with what the bytes are (their magic bytes, read with `infer`), it
//! must not be empty or over [`MAX_MEDIA`], and an image's width and height
//! are read from its header (with `imagesize`, never by decoding it).
//!
//! The allow-list is what Matrix clients show inline or commonly open, and
//! what can be checked from the bytes:
//!
//! | type | sent as | checked by |
//! | --- | --- | --- |
//! | `image/png`, `image/jpeg`, `image/gif`, `image/webp` | `m.image` | magic bytes; the header must give a width and a height |
//! | `video/mp4`, `video/webm` | `m.video` | magic bytes (`ftyp` brands of MP4, the EBML `webm` doctype) |
//! | `audio/mpeg`, `audio/ogg`, `audio/wav`, `audio/mp4` | `m.audio` | magic bytes (Ogg Opus counts as `audio/ogg`; an `audio/mp4` may carry an MP4 video brand) |
//! | `application/pdf` | `m.file` | magic bytes (`%PDF` in the first KiB) |
//! | `text/plain` | `m.file` | no magic bytes exist: valid UTF-8 without NUL |
//!
//! Refused on purpose: `application/octet-stream` (bytes of no declared
//! type cannot be checked, and an allow-list that lets them through is no
//! allow-list; the application should say what it sends), SVG and HTML
//! (active content), archives and executables. Common aliases are read as
//! their canonical type (`image/jpg` as `image/jpeg`, `audio/x-wav` as
//! `audio/wav`, `audio/mp3` as `audio/mpeg`, `audio/x-m4a` as `audio/mp4`),
//! and [`MediaInfo::mimetype`] is always the canonical type.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest file accepted: 4 MiB. A file reaches the bridge inside a
/// Lambda request, which is at most 6 MB (API Gateway forwards binary
/// bodies base64-encoded); 4 MiB is 5.33 MiB as base64, which leaves room
/// for the event's headers and request context. Larger files would need an
/// upload straight to the homeserver or to S3, which this version does not do.
pub const MAX_MEDIA: usize = 4 * 1024 * 1024;

/// The longest file name kept, in bytes (a common file system limit).
pub const MAX_FILENAME: usize = 255;

/// How Matrix shows a file: the `msgtype` of its `m.room.message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    File,
}

impl MediaKind {
    pub fn msgtype(self) -> &'static str {
        match self {
            Self::Image => "m.image",
            Self::Video => "m.video",
            Self::Audio => "m.audio",
            Self::File => "m.file",
        }
    }
}

/// What the checks found out about an accepted file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The canonical type from the allow-list (no parameters, lower case).
    pub mimetype: String,
    /// The size in bytes.
    pub size: u64,
    /// An image's size in pixels, from its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

impl MediaInfo {
    pub fn kind(&self) -> MediaKind {
        allowed(&self.mimetype).map_or(MediaKind::File, |allowed| allowed.kind)
    }

    /// A name for a file that came without one: `image.png`, `file.pdf`.
    pub fn fallback_filename(&self) -> String {
        let (stem, extension) = match allowed(&self.mimetype) {
            Some(allowed) => (allowed.kind.msgtype(), allowed.extension),
            None => ("m.file", "bin"),
        };
        format!("{}.{extension}", stem.trim_start_matches("m."))
    }
}

/// Why a file is refused, in the bridge's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    /// The declared type (as much of it as is fit to show).
    #[error("files of type {0} are not accepted")]
    NotAllowed(Declared),
    /// The bytes are not what the declared type says; `detected` is what
    /// they look like, when they look like something known.
    #[error("the file's content is not {declared}{}", .detected.as_ref().map(|d| format!(" (it looks like {d})")).unwrap_or_default())]
    Mismatch {
        declared: String,
        detected: Option<String>,
    },
    /// An image whose header does not give its size.
    #[error("the {0} image's header cannot be read")]
    Corrupt(String),
}

/// A declared content type as a caller wrote it, shortened and stripped
/// of anything unprintable so it is fit for an error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared(String);

impl Declared {
    fn new(raw: &str) -> Self {
        Self(
            raw.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(100)
                .collect(),
        )
    }
}

impl fmt::Display for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// One row of the allow-list.
struct Allowed {
    mimetype: &'static str,
    kind: MediaKind,
    /// What `infer` may call the bytes; empty: not sniffable (text).
    sniffed_as: &'static [&'static str],
    extension: &'static str,
}

const ALLOWED: &[Allowed] = &[
    Allowed {
        mimetype: "image/png",
        kind: MediaKind::Image,
        sniffed_as: &["image/png"],
        extension: "png",
    },
    Allowed {
        mimetype: "image/jpeg",
        kind: MediaKind::Image,
        sniffed_as: &["image/jpeg"],
        extension: "jpg",
    },
    Allowed {
        mimetype: "image/gif",
        kind: MediaKind::Image,
        sniffed_as: &["image/gif"],
        extension: "gif",
    },
    Allowed {
        mimetype: "image/webp",
        kind: MediaKind::Image,
        sniffed_as: &["image/webp"],
        extension: "webp",
    },
    Allowed {
        mimetype: "video/mp4",
        kind: MediaKind::Video,
        sniffed_as: &["video/mp4", "video/x-m4v"],
        extension: "mp4",
    },
    Allowed {
        mimetype: "video/webm",
        kind: MediaKind::Video,
        sniffed_as: &["video/webm"],
        extension: "webm",
    },
    Allowed {
        mimetype: "audio/mpeg",
        kind: MediaKind::Audio,
        sniffed_as: &["audio/mpeg"],
        extension: "mp3",
    },
    Allowed {
        mimetype: "audio/ogg",
        kind: MediaKind::Audio,
        sniffed_as: &["audio/ogg", "audio/opus"],
        extension: "ogg",
    },
    Allowed {
        mimetype: "audio/wav",
        kind: MediaKind::Audio,
        sniffed_as: &["audio/x-wav"],
        extension: "wav",
    },
    Allowed {
        mimetype: "audio/mp4",
        kind: MediaKind::Audio,
        sniffed_as: &["audio/m4a", "video/mp4"],
        extension: "m4a",
    },
    Allowed {
        mimetype: "application/pdf",
        kind: MediaKind::File,
        sniffed_as: &["application/pdf"],
        extension: "pdf",
    },
    Allowed {
        mimetype: "text/plain",
        kind: MediaKind::File,
        sniffed_as: &[],
        extension: "txt",
    },
];

/// Other names for types of the allow-list.
const ALIASES: &[(&str, &str)] = &[
    ("image/jpg", "image/jpeg"),
    ("image/pjpeg", "image/jpeg"),
    ("audio/mp3", "audio/mpeg"),
    ("audio/x-mp3", "audio/mpeg"),
    ("audio/mpeg3", "audio/mpeg"),
    ("audio/opus", "audio/ogg"),
    ("audio/x-wav", "audio/wav"),
    ("audio/wave", "audio/wav"),
    ("audio/vnd.wave", "audio/wav"),
    ("audio/m4a", "audio/mp4"),
    ("audio/x-m4a", "audio/mp4"),
    ("application/x-pdf", "application/pdf"),
];

fn allowed(mimetype: &str) -> Option<&'static Allowed> {
    ALLOWED.iter().find(|allowed| allowed.mimetype == mimetype)
}

/// The allow-list row of a declared `Content-Type`: its essence (before any
/// `;` parameter), case-insensitive, aliases resolved.
fn declared_type(content_type: &str) -> Option<&'static Allowed> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == essence)
        .map_or(essence.as_str(), |(_, canonical)| canonical);
    allowed(canonical)
}

/// Checks a file against its declared `Content-Type` (see the module doc).
pub fn inspect(content_type: &str, bytes: &[u8]) -> Result<MediaInfo, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    if bytes.len() > MAX_MEDIA {
        return Err(MediaError::TooLarge {
            size: bytes.len(),
            max: MAX_MEDIA,
        });
    }
    let declared = declared_type(content_type)
        .ok_or_else(|| MediaError::NotAllowed(Declared::new(content_type)))?;
    let mismatch = |detected: Option<&str>| MediaError::Mismatch {
        declared: declared.mimetype.to_owned(),
        detected: detected.map(str::to_owned),
    };
    if declared.sniffed_as.is_empty() {
        // Text has no magic bytes: it must at least be text.
        let text = std::str::from_utf8(bytes).map_err(|_| mismatch(None))?;
        if text.contains('\0') {
            return Err(mismatch(None));
        }
    } else {
        let detected = infer::get(bytes).map(|kind| kind.mime_type());
        if !detected.is_some_and(|detected| declared.sniffed_as.contains(&detected)) {
            return Err(mismatch(detected));
        }
    }
    let (width, height) = if declared.kind == MediaKind::Image {
        let size = imagesize::blob_size(bytes)
            .map_err(|_| MediaError::Corrupt(declared.mimetype.to_owned()))?;
        let (Ok(width), Ok(height)) = (u32::try_from(size.width), u32::try_from(size.height))
        else {
            return Err(MediaError::Corrupt(declared.mimetype.to_owned()));
        };
        if width == 0 || height == 0 {
            return Err(MediaError::Corrupt(declared.mimetype.to_owned()));
        }
        (Some(width), Some(height))
    } else {
        (None, None)
    };
    Ok(MediaInfo {
        mimetype: declared.mimetype.to_owned(),
        size: bytes.len() as u64,
        width,
        height,
    })
}

/// Unicode's bidirectional controls: they can make `gpj.exe` show as
/// `exe.jpg`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A file name fit to show and to save: the last part of a path, without
/// control or bidirectional characters, trimmed, at most [`MAX_FILENAME`]
/// bytes (shortened before its extension). `None` when nothing is left
/// (then use [`MediaInfo::fallback_filename`]).
pub fn sanitize_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect();
    let cleaned = shorten(cleaned.trim());
    // Nothing, `.` and `..` name no file.
    (!cleaned.chars().all(|c| c == '.')).then_some(cleaned)
}

/// A name cut to [`MAX_FILENAME`] bytes on a character boundary, keeping a
/// short extension: `long….pdf` rather than a name without one.
fn shorten(name: &str) -> String {
    if name.len() <= MAX_FILENAME {
        return name.to_owned();
    }
    let extension = name
        .rfind('.')
        .filter(|&dot| dot > 0 && name.len() - dot <= 16)
        .map_or("", |dot| &name[dot..]);
    let stem = &name[..name.len() - extension.len()];
    let mut cut = MAX_FILENAME - extension.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{extension}", stem[..cut].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG signature and IHDR chunk: all `infer` and `imagesize` read.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        bytes.extend(width.to_be_bytes());
        bytes.extend(height.to_be_bytes());
        bytes.extend([8, 6, 0, 0, 0]); // depth, RGBA, compression, filter, interlace
        bytes.extend([0; 4]); // CRC (not checked)
        bytes.extend(b"\x00\x00\x00\x00IEND\xaeB`\x82");
        bytes
    }

    fn gif(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = b"GIF89a".to_vec();
        bytes.extend(width.to_le_bytes());
        bytes.extend(height.to_le_bytes());
        bytes.extend([0, 0, 0, b';']);
        bytes
    }

    /// SOI, a JFIF APP0 segment, then a baseline SOF0 with the size.
    fn jpeg(width: u16, height: u16) -> Vec<u8> {
        let mut bytes =
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00".to_vec();
        bytes.extend(b"\xff\xc0\x00\x11\x08");
        bytes.extend(height.to_be_bytes());
        bytes.extend(width.to_be_bytes());
        bytes.extend(b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9");
        bytes
    }

    /// A RIFF/WEBP file with a VP8X chunk (sizes stored minus one, 24 bits).
    fn webp(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"RIFF\x16\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00".to_vec();
        bytes.extend(&(width - 1).to_le_bytes()[..3]);
        bytes.extend(&(height - 1).to_le_bytes()[..3]);
        bytes
    }

    fn ftyp(brand: &[u8; 4]) -> Vec<u8> {
        let mut bytes = b"\x00\x00\x00\x18ftyp".to_vec();
        bytes.extend(brand);
        bytes.extend(b"\x00\x00\x02\x00isomiso2");
        bytes.extend(b"\x00\x00\x00\x08free");
        bytes
    }

    /// An EBML header with the `webm` doctype, padded past the 256 bytes
    /// `infer` wants to look at.
    fn webm() -> Vec<u8> {
        let mut bytes = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm\x42\x87\x81\x04\x42\x85\x81\x02".to_vec();
        bytes.resize(300, 0);
        bytes
    }

    fn ogg(codec_header: &[u8]) -> Vec<u8> {
        let mut bytes = b"OggS\x00\x02".to_vec();
        bytes.resize(28, 0);
        bytes.extend(codec_header);
        bytes.resize(64, 0);
        bytes
    }

    fn wav() -> Vec<u8> {
        let mut bytes = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00".to_vec();
        bytes.extend(b"\x44\xac\x00\x00\x88\x58\x01\x00\x02\x00\x10\x00data\x00\x00\x00\x00");
        bytes
    }

    fn mp3() -> Vec<u8> {
        let mut bytes = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
        bytes.extend(b"\xff\xfb\x90\x64");
        bytes.resize(64, 0);
        bytes
    }

    fn pdf() -> Vec<u8> {
        b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec()
    }

    #[test]
    fn accepts_each_allowed_type_with_its_real_bytes() {
        let cases: Vec<(&str, Vec<u8>, MediaKind)> = vec![
            ("image/png", png(640, 480), MediaKind::Image),
            ("image/gif", gif(16, 9), MediaKind::Image),
            ("image/jpeg", jpeg(1024, 768), MediaKind::Image),
            ("image/webp", webp(300, 200), MediaKind::Image),
            ("video/mp4", ftyp(b"isom"), MediaKind::Video),
            ("video/mp4", ftyp(b"mp42"), MediaKind::Video),
            ("video/webm", webm(), MediaKind::Video),
            ("audio/mpeg", mp3(), MediaKind::Audio),
            ("audio/ogg", ogg(b"\x01vorbis"), MediaKind::Audio),
            ("audio/ogg", ogg(b"OpusHead"), MediaKind::Audio),
            ("audio/wav", wav(), MediaKind::Audio),
            ("audio/mp4", ftyp(b"M4A "), MediaKind::Audio),
            ("audio/mp4", ftyp(b"isom"), MediaKind::Audio),
            ("application/pdf", pdf(), MediaKind::File),
            ("text/plain", "héllo, wörld\n".into(), MediaKind::File),
        ];
        for (declared, bytes, kind) in cases {
            let info = inspect(declared, &bytes).unwrap_or_else(|err| panic!("{declared}: {err}"));
            assert_eq!(info.mimetype, declared);
            assert_eq!(info.size, bytes.len() as u64);
            assert_eq!(info.kind(), kind, "{declared}");
            assert_eq!(info.width.is_some(), kind == MediaKind::Image, "{declared}");
        }
    }

    #[test]
    fn reads_image_sizes_from_headers() {
        let size = |declared, bytes: Vec<u8>| {
            let info = inspect(declared, &bytes).unwrap();
            (info.width.unwrap(), info.height.unwrap())
        };
        assert_eq!(size("image/png", png(640, 480)), (640, 480));
        assert_eq!(size("image/gif", gif(16, 9)), (16, 9));
        assert_eq!(size("image/jpeg", jpeg(1024, 768)), (1024, 768));
        assert_eq!(size("image/webp", webp(300, 200)), (300, 200));
        assert_eq!(size("image/png", png(1, 70_000)), (1, 70_000));
    }

    #[test]
    fn reads_the_declared_type_leniently_and_answers_the_canonical_one() {
        let cases = [
            ("IMAGE/PNG", "image/png", png(1, 1)),
            ("image/png; charset=binary", "image/png", png(1, 1)),
            (" image/jpg ", "image/jpeg", jpeg(2, 2)),
            ("audio/x-wav", "audio/wav", wav()),
            ("audio/mp3", "audio/mpeg", mp3()),
            ("audio/x-m4a", "audio/mp4", ftyp(b"M4A ")),
            ("audio/opus", "audio/ogg", ogg(b"OpusHead")),
            ("text/plain; charset=utf-8", "text/plain", b"hi".to_vec()),
        ];
        for (declared, canonical, bytes) in cases {
            assert_eq!(inspect(declared, &bytes).unwrap().mimetype, canonical);
        }
    }

    #[test]
    fn refuses_types_off_the_allow_list() {
        for declared in [
            "application/octet-stream",
            "image/svg+xml",
            "text/html",
            "application/zip",
            "application/x-msdownload",
            "video/quicktime",
            "image/bmp",
            "",
            "nonsense",
        ] {
            let err = inspect(declared, b"<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap_err();
            assert!(
                matches!(err, MediaError::NotAllowed(_)),
                "{declared}: {err}"
            );
        }
    }

    #[test]
    fn refuses_bytes_that_contradict_the_declared_type() {
        let err = inspect("image/png", &jpeg(1, 1)).unwrap_err();
        assert_eq!(
            err,
            MediaError::Mismatch {
                declared: "image/png".into(),
                detected: Some("image/jpeg".into())
            }
        );
        assert_eq!(
            err.to_string(),
            "the file's content is not image/png (it looks like image/jpeg)"
        );
        // An executable posing as a picture, a zip as a PDF, text as audio.
        let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
        elf.resize(64, 0);
        assert!(matches!(
            inspect("image/gif", &elf),
            Err(MediaError::Mismatch {
                detected: Some(_),
                ..
            })
        ));
        assert!(matches!(
            inspect("application/pdf", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"),
            Err(MediaError::Mismatch { .. })
        ));
        assert_eq!(
            inspect("audio/mpeg", b"just some words")
                .unwrap_err()
                .to_string(),
            "the file's content is not audio/mpeg"
        );
        // Close relatives are still not the declared type.
        assert!(inspect("video/mp4", &ftyp(b"M4A ")).is_err());
        assert!(inspect("video/mp4", &ftyp(b"qt  ")).is_err());
        assert!(inspect("audio/ogg", &webm()).is_err());
    }

    #[test]
    fn text_must_be_utf8_without_nul() {
        assert!(inspect("text/plain", "plain words\r\n\tand tabs".as_bytes()).is_ok());
        assert!(inspect("text/plain", b"\xef\xbb\xbfwith a BOM").is_ok());
        for bad in [
            &b"nul\0inside"[..],
            b"\xff\xfe\x00l\x00a\x00t\x00i\x00n",
            b"caf\xe9",
        ] {
            assert!(
                matches!(inspect("text/plain", bad), Err(MediaError::Mismatch { .. })),
                "{bad:?}"
            );
        }
        // A PNG is not text, whatever it is called.
        assert!(inspect("text/plain", &png(1, 1)).is_err());
    }

    #[test]
    fn refuses_empty_and_oversized_files() {
        assert_eq!(inspect("image/png", b""), Err(MediaError::Empty));
        let mut big = png(1, 1);
        big.resize(MAX_MEDIA + 1, 0);
        assert_eq!(
            inspect("image/png", &big),
            Err(MediaError::TooLarge {
                size: MAX_MEDIA + 1,
                max: MAX_MEDIA
            })
        );
        big.truncate(MAX_MEDIA);
        assert!(
            inspect("image/png", &big).is_ok(),
            "exactly the limit is fine"
        );
        // Size comes before type: an oversized file is refused for its size.
        assert!(matches!(
            inspect("application/zip", &big),
            Err(MediaError::NotAllowed(_))
        ));
        big.push(0);
        assert!(matches!(
            inspect("application/zip", &big),
            Err(MediaError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_images_whose_header_gives_no_size() {
        // The magic bytes, then nothing.
        assert_eq!(
            inspect("image/png", b"\x89PNG\r\n\x1a\n"),
            Err(MediaError::Corrupt("image/png".into()))
        );
        assert_eq!(
            inspect("image/jpeg", b"\xff\xd8\xff\xe0\x00"),
            Err(MediaError::Corrupt("image/jpeg".into()))
        );
        assert_eq!(
            inspect("image/png", &png(0, 10)),
            Err(MediaError::Corrupt("image/png".into()))
        );
        assert_eq!(
            MediaError::Corrupt("image/png".into()).to_string(),
            "the image/png image's header cannot be read"
        );
    }

    #[test]
    fn error_messages_show_a_tame_declared_type() {
        let long = format!("x/{}\u{7}\n", "y".repeat(500));
        let err = inspect(&long, b"data").unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 160, "{message}");
        assert!(!message.contains('\n') && !message.contains('\u{7}'));
        assert_eq!(
            inspect("", b"x").unwrap_err().to_string(),
            "files of type (none) are not accepted"
        );
    }

    #[test]
    fn fallback_filenames_follow_the_type() {
        let info = inspect("image/jpg", &jpeg(1, 1)).unwrap();
        assert_eq!(info.fallback_filename(), "image.jpg");
        let info = inspect("application/pdf", &pdf()).unwrap();
        assert_eq!(info.fallback_filename(), "file.pdf");
        let info = inspect("audio/wav", &wav()).unwrap();
        assert_eq!(info.fallback_filename(), "audio.wav");
    }

    #[test]
    fn sanitizes_file_names() {
        let clean = |name: &str| sanitize_filename(name);
        assert_eq!(clean("photo.png").as_deref(), Some("photo.png"));
        assert_eq!(clean("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(clean("C:\\Users\\me\\cat.jpg").as_deref(), Some("cat.jpg"));
        assert_eq!(clean(" a\tb\u{0}c\n.txt ").as_deref(), Some("abc.txt"));
        assert_eq!(
            clean("invoice\u{202E}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(clean("\u{85}x\u{7f}").as_deref(), Some("x"));
        assert_eq!(clean(".hidden").as_deref(), Some(".hidden"));
        assert_eq!(clean("héllo wörld.pdf").as_deref(), Some("héllo wörld.pdf"));
        for nothing in ["", "   ", ".", "..", "dir/", "a/..", "\u{1}\u{2}"] {
            assert_eq!(clean(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn long_file_names_keep_their_extension_and_whole_characters() {
        let name = format!("{}.pdf", "é".repeat(200)); // 400 bytes + 4
        let clean = sanitize_filename(&name).unwrap();
        assert!(clean.len() <= MAX_FILENAME, "{}", clean.len());
        assert!(clean.ends_with("é.pdf"), "{clean}");
        let exactly = "a".repeat(MAX_FILENAME);
        assert_eq!(sanitize_filename(&exactly).unwrap(), exactly);
        // No extension worth keeping: just cut.
        let clean = sanitize_filename(&"b".repeat(300)).unwrap();
        assert_eq!(clean, "b".repeat(MAX_FILENAME));
        let clean = sanitize_filename(&format!("{}.{}", "c".repeat(10), "d".repeat(300))).unwrap();
        assert_eq!(clean.len(), MAX_FILENAME);
        // Only dots left once cut: no name.
        assert_eq!(
            sanitize_filename(&format!("{}{}", ".".repeat(300), "x".repeat(20))),
            None
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn inspecting_any_bytes_answers_without_panicking(
                declared in prop::sample::select(vec![
                    "image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4",
                    "video/webm", "audio/mpeg", "audio/ogg", "audio/wav", "audio/mp4",
                    "application/pdf", "text/plain",
                ]),
                prefix in prop::sample::select(vec![
                    &b""[..], b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a",
                    b"RIFF\0\0\0\0WEBPVP8 ", b"RIFF\0\0\0\0WEBPVP8L", b"\0\0\0\x18ftypisom",
                ]),
                rest in prop::collection::vec(any::<u8>(), 0..600),
            ) {
                let bytes = [prefix, &rest[..]].concat();
                if let Ok(info) = inspect(declared, &bytes) {
                    prop_assert_eq!(info.size, bytes.len() as u64);
                    prop_assert_eq!(info.mimetype.as_str(), declared);
                    if info.kind() == MediaKind::Image {
                        prop_assert!(info.width.unwrap_or(0) > 0 && info.height.unwrap_or(0) > 0);
                    }
                }
            }

            #[test]
            fn sanitized_names_are_short_and_plain(name in "\\PC{0,400}|[a-z./\\\\\u{0}-\u{1f}\u{202e}]{0,300}") {
                if let Some(clean) = sanitize_filename(&name) {
                    prop_assert!(!clean.is_empty() && clean.len() <= MAX_FILENAME);
                    prop_assert!(!clean.contains(['/', '\\']));
                    prop_assert!(!clean.chars().any(|c| c.is_control() || is_bidi_control(c)));
                    prop_assert!(clean.chars().any(|c| c != '.'));
                }
            }
        }
    }
}
