//! Errors that say where: file, document, object and field.

use std::fmt;
use std::path::PathBuf;

/// Where an object came from: a file, the document in it (1-based) and, inside a `List`, the item (0-based).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file (as given on the command line, joined with the path inside a directory).
    pub file: PathBuf,
    /// The YAML/JSON document in the file, counting from 1.
    pub document: usize,
    /// The index inside a `List` object's `items`, if any.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// `Kind namespace/name` of an object, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: String,
    /// Its namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Its name (may be empty if missing).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() { "<unnamed>" } else { &self.name };
        if self.namespace.is_empty() { write!(f, "{} {name}", self.kind) } else { write!(f, "{} {}/{name}", self.kind, self.namespace) }
    }
}

/// A problem with the input: which file, document, object and field, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// Where the object is.
    pub location: Location,
    /// Which object, when known.
    pub object: Option<ObjectRef>,
    /// The messages, each starting with the field path where there is one
    /// (the API server's format: `spec.ingress[0].from[0]: Required value: must specify a peer`).
    pub messages: Vec<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        match self.messages.as_slice() {
            [one] => write!(f, ": {one}"),
            many => {
                write!(f, " is invalid:")?;
                for m in many {
                    write!(f, "\n  * {m}")?;
                }
                Ok(())
            }
        }
    }
}

/// Everything that can go wrong while loading manifests.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path given on the command line does not exist.
    #[error("the path \"{0}\" does not exist")]
    NotFound(PathBuf),
    /// A document or object is malformed or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}
