//! Capabilities: the exec helper empties the bounding, inheritable and
//! ambient sets while still root, and after setuid proves that every set,
//! permitted and effective included, is empty.
//!
//! Must never run in the daemon's own process, which needs its
//! capabilities for every later spawn.

use caps::{CapSet, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("cannot clear the {set} set")]
    Clear {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("cannot read the {set} set")]
    Read {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("{set} set still holds {caps}")]
    Remaining { set: &'static str, caps: String },
}

/// The sets checked after setuid, with their names for messages.
const SETS: [(CapSet, &str); 5] = [
    (CapSet::Permitted, "permitted"),
    (CapSet::Effective, "effective"),
    (CapSet::Inheritable, "inheritable"),
    (CapSet::Ambient, "ambient"),
    (CapSet::Bounding, "bounding"),
];

/// Empties the bounding set (needs CAP_SETPCAP, so before setuid), then
/// the inheritable and ambient sets. setuid from root then clears the
/// permitted and effective sets; with an empty bounding set no exec can
/// give any capability back.
pub fn drop_all() -> Result<(), CapabilityError> {
    for (set, name) in [
        (CapSet::Bounding, "bounding"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
    ] {
        caps::clear(None, set).map_err(|source| CapabilityError::Clear { set: name, source })?;
    }
    Ok(())
}

/// Reads every set back from the kernel and fails naming the first that
/// is not empty. Returns what is held (nothing, then), for the report of
/// what is in force, so the sets are read once.
pub fn check_all_empty() -> Result<Vec<String>, CapabilityError> {
    let mut held = Vec::new();
    for (set, name) in SETS {
        let caps =
            caps::read(None, set).map_err(|source| CapabilityError::Read { set: name, source })?;
        if !caps.is_empty() {
            return Err(CapabilityError::Remaining {
                set: name,
                caps: names(&caps),
            });
        }
        held.extend(caps.iter().map(|cap| format!("{name}:{cap}")));
    }
    Ok(held)
}

fn names(held: &CapsHashSet) -> String {
    let mut names: Vec<String> = held.iter().map(|c| c.to_string()).collect();
    names.sort();
    names.join(",")
}
