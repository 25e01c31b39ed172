//! The fault proxy's schedule: which fault the `n`th request gets. A
//! function of the seed and `n` alone, so a seed replays the same sequence
//! of faults (which request is `n`th depends on timing when requests run
//! concurrently; the sequence itself does not).
//!
//! A profile says how often each fault happens, in percent, and the ranges
//! of its parameters. It is written as a preset, optionally followed by
//! overrides: `default`, `none`, `mild,drop_after=5`,
//! `harsh,stall=0,delay_ms=10-200` (see [`Profile::parse`]).

use std::fmt;
use std::time::Duration;

/// What the proxy does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and answer with the homeserver's answer.
    Pass,
    /// Wait, then forward it.
    Delay(Duration),
    /// Wait longer than the caller's timeout, then forward it: the caller
    /// gives up, the homeserver still gets it ("maybe delivered", late).
    Stall(Duration),
    /// Close the connection without forwarding or answering.
    DropBefore,
    /// Forward it, then close the connection without answering: delivered,
    /// but the caller cannot know ("maybe delivered").
    DropAfter,
    /// Reset the connection (TCP RST) without forwarding.
    Reset,
    /// Answer this 5xx without forwarding.
    ServerError(u16),
    /// Forward it, then answer `504` as a load balancer that timed out
    /// would: delivered, with an error answer.
    GatewayTimeout,
    /// Answer `429 M_LIMIT_EXCEEDED` with `Retry-After` and
    /// `retry_after_ms` without forwarding.
    RateLimited(Duration),
}

/// The kinds of [`Fault`], for counting and for profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Pass,
    Delay,
    Stall,
    DropBefore,
    DropAfter,
    Reset,
    ServerError,
    GatewayTimeout,
    RateLimited,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Pass,
        FaultKind::Delay,
        FaultKind::Stall,
        FaultKind::DropBefore,
        FaultKind::DropAfter,
        FaultKind::Reset,
        FaultKind::ServerError,
        FaultKind::GatewayTimeout,
        FaultKind::RateLimited,
    ];

    /// Its name in profiles, logs and counts.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Pass => "pass",
            FaultKind::Delay => "delay",
            FaultKind::Stall => "stall",
            FaultKind::DropBefore => "drop_before",
            FaultKind::DropAfter => "drop_after",
            FaultKind::Reset => "reset",
            FaultKind::ServerError => "server_error",
            FaultKind::GatewayTimeout => "gateway_timeout",
            FaultKind::RateLimited => "rate_limit",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Pass => FaultKind::Pass,
            Fault::Delay(_) => FaultKind::Delay,
            Fault::Stall(_) => FaultKind::Stall,
            Fault::DropBefore => FaultKind::DropBefore,
            Fault::DropAfter => FaultKind::DropAfter,
            Fault::Reset => FaultKind::Reset,
            Fault::ServerError(_) => FaultKind::ServerError,
            Fault::GatewayTimeout => FaultKind::GatewayTimeout,
            Fault::RateLimited(_) => FaultKind::RateLimited,
        }
    }

    /// Whether the request reaches the homeserver.
    pub fn forwards(&self) -> bool {
        matches!(
            self,
            Fault::Pass
                | Fault::Delay(_)
                | Fault::Stall(_)
                | Fault::DropAfter
                | Fault::GatewayTimeout
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.kind().name();
        match self {
            Fault::Delay(d) | Fault::Stall(d) | Fault::RateLimited(d) => {
                write!(f, "{name} {} ms", d.as_millis())
            }
            Fault::ServerError(status) => write!(f, "{name} {status}"),
            _ => f.write_str(name),
        }
    }
}

/// An inclusive range of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis {
    pub min: u64,
    pub max: u64,
}

impl Millis {
    pub const fn new(min: u64, max: u64) -> Self {
        Self { min, max }
    }

    fn pick(self, random: u64) -> Duration {
        let span = self.max.saturating_sub(self.min).saturating_add(1);
        Duration::from_millis(self.min + random % span)
    }

    fn parse(name: &str, text: &str) -> Result<Self, String> {
        let number = |part: &str| {
            part.trim().parse::<u64>().map_err(|_| {
                format!("{name}: {text:?} is not a number of milliseconds or a range like 20-1500")
            })
        };
        let range = match text.split_once('-') {
            Some((min, max)) => Self::new(number(min)?, number(max)?),
            None => {
                let at = number(text)?;
                Self::new(at, at)
            }
        };
        if range.min > range.max {
            return Err(format!("{name}: {text:?} is an empty range"));
        }
        Ok(range)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// How often each fault happens, in basis points (1/100 of a percent) of
/// requests, and the ranges of their parameters. What is left is `pass`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Basis points per kind, indexed by [`FaultKind::index`]; `pass` is unused.
    pub rates: [u32; 9],
    pub delay_ms: Millis,
    pub stall_ms: Millis,
    pub retry_after_ms: Millis,
}

/// The whole: 100 % in basis points.
const WHOLE: u32 = 10_000;

impl Profile {
    /// No faults: every request passes.
    pub fn none() -> Self {
        Self {
            rates: [0; 9],
            delay_ms: Millis::new(20, 1500),
            // Over the appservice client's 10 s timeout.
            stall_ms: Millis::new(11_000, 12_000),
            retry_after_ms: Millis::new(200, 2000),
        }
    }

    /// A preset by name: `none`, `mild`, `default`, `harsh`.
    pub fn preset(name: &str) -> Option<Self> {
        // delay, stall, drop_before, drop_after, reset, 5xx, 504 after, 429 (percent x 100)
        let rates: [u32; 8] = match name {
            "none" => [0; 8],
            "mild" => [500, 0, 100, 100, 100, 200, 100, 200],
            "default" => [1000, 30, 300, 300, 200, 400, 200, 400],
            "harsh" => [2000, 100, 600, 600, 400, 800, 400, 800],
            _ => return None,
        };
        let mut profile = Self::none();
        profile.rates[1..].copy_from_slice(&rates);
        Some(profile)
    }

    pub fn rate(&self, kind: FaultKind) -> u32 {
        self.rates[kind.index()]
    }

    /// The chance of any fault, in basis points.
    pub fn total(&self) -> u32 {
        self.rates[1..].iter().sum()
    }

    /// A preset, then `name=value` overrides, comma-separated: a kind's
    /// chance in percent (`drop_after=2.5`), or a parameter in milliseconds
    /// (`delay_ms=20-1500`, `stall_ms=11000`, `retry_after_ms=200-2000`).
    /// Without a preset, `none` is the start.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .peekable();
        let mut profile = match parts.peek().and_then(|first| Self::preset(first)) {
            Some(preset) => {
                parts.next();
                preset
            }
            None => Self::none(),
        };
        for part in parts {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                format!("{part:?}: expected a preset (none, mild, default, harsh) first, then name=value")
            })?;
            let (name, value) = (name.trim(), value.trim());
            match name {
                "delay_ms" => profile.delay_ms = Millis::parse(name, value)?,
                "stall_ms" => profile.stall_ms = Millis::parse(name, value)?,
                "retry_after_ms" => profile.retry_after_ms = Millis::parse(name, value)?,
                _ => {
                    let kind = FaultKind::ALL[1..]
                        .iter()
                        .find(|kind| kind.name() == name)
                        .ok_or_else(|| format!("{name}: no such fault or parameter"))?;
                    let percent: f64 = value
                        .parse()
                        .ok()
                        .filter(|p: &f64| (0.0..=100.0).contains(p))
                        .ok_or_else(|| format!("{name}: {value:?} is not a percentage"))?;
                    profile.rates[kind.index()] = (percent * 100.0).round() as u32;
                }
            }
        }
        if profile.total() > WHOLE {
            return Err(format!(
                "the faults add up to {}%, over 100%",
                f64::from(profile.total()) / 100.0
            ));
        }
        Ok(profile)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in &FaultKind::ALL[1..] {
            let rate = self.rate(*kind);
            if rate == 0 {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}={}", kind.name(), f64::from(rate) / 100.0)?;
        }
        if first {
            f.write_str("none")?;
        }
        write!(
            f,
            " (delay_ms={}, stall_ms={}, retry_after_ms={})",
            self.delay_ms, self.stall_ms, self.retry_after_ms
        )
    }
}

/// splitmix64's finaliser: a good 64-bit mix of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small seeded random sequence (splitmix64), for reproducible workloads.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with `percent` chance.
    pub fn chance(&mut self, percent: f64) -> bool {
        (self.below(1_000_000) as f64) < percent * 10_000.0
    }

    /// A duration in `min..=max` milliseconds.
    pub fn millis(&mut self, min: u64, max: u64) -> Duration {
        Millis::new(min, max.max(min)).pick(self.next_u64())
    }
}

/// Which fault each request gets.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Drawn from `profile` with `seed`: the `n`th request's fault is a
    /// function of both and `n`.
    Seeded { seed: u64, profile: Profile },
    /// These faults in turn (for tests and demonstrations).
    Cycle(Vec<Fault>),
}

impl Schedule {
    pub fn seeded(seed: u64, profile: Profile) -> Self {
        Self::Seeded { seed, profile }
    }

    /// The fault of request number `n` (from 0).
    pub fn fault(&self, n: u64) -> Fault {
        match self {
            Schedule::Cycle(faults) => {
                let len = faults.len() as u64;
                if len == 0 {
                    Fault::Pass
                } else {
                    faults[(n % len) as usize]
                }
            }
            Schedule::Seeded { seed, profile } => {
                let random = mix(seed ^ mix(n));
                let parameter = mix(random);
                let mut pick = (random % u64::from(WHOLE)) as u32;
                for kind in &FaultKind::ALL[1..] {
                    let rate = profile.rate(*kind);
                    if pick < rate {
                        return match kind {
                            FaultKind::Pass => Fault::Pass,
                            FaultKind::Delay => Fault::Delay(profile.delay_ms.pick(parameter)),
                            FaultKind::Stall => Fault::Stall(profile.stall_ms.pick(parameter)),
                            FaultKind::DropBefore => Fault::DropBefore,
                            FaultKind::DropAfter => Fault::DropAfter,
                            FaultKind::Reset => Fault::Reset,
                            FaultKind::ServerError => {
                                Fault::ServerError([500, 502, 503][(parameter % 3) as usize])
                            }
                            FaultKind::GatewayTimeout => Fault::GatewayTimeout,
                            FaultKind::RateLimited => {
                                Fault::RateLimited(profile.retry_after_ms.pick(parameter))
                            }
                        };
                    }
                    pick -= rate;
                }
                Fault::Pass
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Seeded { seed, profile } => write!(f, "seed {seed}, {profile}"),
            Schedule::Cycle(faults) => {
                f.write_str("cycle")?;
                for fault in faults {
                    write!(f, " [{fault}]")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Profile {
        Profile::preset("default").unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let a = Schedule::seeded(42, default());
        let b = Schedule::seeded(42, default());
        let first: Vec<Fault> = (0..5000).map(|n| a.fault(n)).collect();
        let again: Vec<Fault> = (0..5000).map(|n| b.fault(n)).collect();
        assert_eq!(first, again);
        // Asked in another order, request n still gets the same fault.
        assert_eq!(
            (0..5000)
                .rev()
                .map(|n| a.fault(n))
                .rev()
                .collect::<Vec<_>>(),
            first
        );
        let other: Vec<Fault> = (0..5000)
            .map(|n| Schedule::seeded(43, default()).fault(n))
            .collect();
        assert_ne!(first, other, "another seed, another sequence");
    }

    #[test]
    fn faults_come_as_often_as_the_profile_says() {
        let profile = default();
        let schedule = Schedule::seeded(7, profile.clone());
        let draws = 200_000u64;
        let mut counts = [0u64; 9];
        for n in 0..draws {
            let fault = schedule.fault(n);
            counts[fault.kind().index()] += 1;
            match fault {
                Fault::Delay(d) => assert!((20..=1500).contains(&(d.as_millis() as u64))),
                Fault::Stall(d) => assert!(d >= Duration::from_secs(11)),
                Fault::RateLimited(d) => assert!((200..=2000).contains(&(d.as_millis() as u64))),
                Fault::ServerError(status) => assert!([500, 502, 503].contains(&status)),
                _ => {}
            }
        }
        for kind in FaultKind::ALL {
            let expected = if kind == FaultKind::Pass {
                f64::from(WHOLE - profile.total())
            } else {
                f64::from(profile.rate(kind))
            } / f64::from(WHOLE);
            let seen = counts[kind.index()] as f64 / draws as f64;
            assert!(
                (seen - expected).abs() < 0.005,
                "{}: {seen} where {expected} was asked",
                kind.name()
            );
        }
    }

    #[test]
    fn none_passes_everything_and_a_cycle_repeats() {
        let schedule = Schedule::seeded(1, Profile::preset("none").unwrap());
        assert!((0..10_000).all(|n| schedule.fault(n) == Fault::Pass));
        let cycle = Schedule::Cycle(vec![Fault::DropAfter, Fault::Pass]);
        assert_eq!(
            (0..4).map(|n| cycle.fault(n)).collect::<Vec<_>>(),
            [Fault::DropAfter, Fault::Pass, Fault::DropAfter, Fault::Pass]
        );
        assert_eq!(Schedule::Cycle(Vec::new()).fault(3), Fault::Pass);
    }

    #[test]
    fn profiles_parse_from_a_preset_and_overrides() {
        let profile = Profile::parse("mild, drop_after=2.5, stall=0.1, delay_ms=10-20").unwrap();
        let mut expected = Profile::preset("mild").unwrap();
        expected.rates[FaultKind::DropAfter.index()] = 250;
        expected.rates[FaultKind::Stall.index()] = 10;
        expected.delay_ms = Millis::new(10, 20);
        assert_eq!(profile, expected);
        assert_eq!(Profile::parse("").unwrap(), Profile::none());
        assert_eq!(
            Profile::parse("reset=1,retry_after_ms=500")
                .unwrap()
                .to_string(),
            "reset=1 (delay_ms=20-1500, stall_ms=11000-12000, retry_after_ms=500)"
        );
        for bad in [
            "default,nonsense=1",
            "default,reset=101",
            "default,reset=x",
            "reset",
            "delay_ms=9-3",
            "harsh,delay=50,pass_through=1",
            "harsh,delay=60,server_error=40",
        ] {
            assert!(Profile::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Profile::preset("none")
                .unwrap()
                .to_string()
                .split(' ')
                .next(),
            Some("none")
        );
    }

    #[test]
    fn faults_say_what_they_are() {
        assert_eq!(
            Fault::Delay(Duration::from_millis(250)).to_string(),
            "delay 250 ms"
        );
        assert_eq!(Fault::ServerError(503).to_string(), "server_error 503");
        assert_eq!(Fault::DropAfter.to_string(), "drop_after");
        assert!(Fault::DropAfter.forwards() && Fault::GatewayTimeout.forwards());
        assert!(!Fault::DropBefore.forwards() && !Fault::RateLimited(Duration::ZERO).forwards());
    }

    #[test]
    fn split_mix_is_reproducible() {
        let mut a = SplitMix::new(9);
        let mut b = SplitMix::new(9);
        assert_eq!(
            (0..100).map(|_| a.below(1000)).collect::<Vec<_>>(),
            (0..100).map(|_| b.below(1000)).collect::<Vec<_>>()
        );
        assert_eq!(a.below(0), 0);
        let d = a.millis(5, 10);
        assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(10));
    }
}
