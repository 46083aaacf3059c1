//! fake placeholder
