//! The CloudAPI side of the domain: SSH keys, images, the Manta-style object namespace (`/<login>/stor`,
//! `/<login>/public`) and ExportImage. Rules only: who may see what, how a `manta_path` becomes object
//! names, what an image's states are. The CloudAPI face translates the wire; `CloudStore` keeps the rows.

pub mod manta;
pub mod model;
pub mod service;

pub use model::*;
pub use service::Cloud;
