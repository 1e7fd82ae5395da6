//! Importing bundle and template archives. The archive itself is read (and its hostile cases
//! refused) by `satchel_archive::reader`; this module owns what its documents must say and what the
//! import will create ([`descriptor`]). Pure: no I/O.

pub mod descriptor;

pub use descriptor::*;
