//! Examples for developers extending crmsync.
