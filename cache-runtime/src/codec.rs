//! Value encoding. JSON is the default and, for now, the only codec: what
//! `redis-cli GET` shows is the plain JSON a Python or Go service can read.

use serde::{Serialize, de::DeserializeOwned};

/// A value the cache can store: `Serialize + DeserializeOwned + Send`.
///
/// Implemented for every such type; the macro checks it on the function's
/// return type so a missing derive is reported there.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// fn assert_cacheable<T: cache_runtime::Cacheable>() {}
/// assert_cacheable::<User>();
/// assert_cacheable::<Vec<String>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` can not be stored in the cache",
    label = "the cached value must implement `Serialize` and `DeserializeOwned`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or cache a type that has it"
)]
pub trait Cacheable: Serialize + DeserializeOwned + Send {}

impl<T: Serialize + DeserializeOwned + Send> Cacheable for T {}

/// Encodes a value as JSON. `None` only if `Serialize` itself fails (a map
/// with non-string keys, a custom impl that errors).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

/// Decodes a stored value. An error means garbage, a foreign value, or a value
/// written by an older version of the return type: the caller treats it as a miss.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}
