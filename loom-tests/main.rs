//! loom models (in progress).
