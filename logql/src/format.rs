//! TODO: owned by the LogQL parser work.
