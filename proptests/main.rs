//! proptest model tests (in progress).
