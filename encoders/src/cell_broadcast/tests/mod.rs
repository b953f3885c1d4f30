//! Tests that need more than one file: independent decoding with Wireshark's `tshark`
//! (`cbs.rs`, `sbcap.rs`, through the helper in `tshark.rs`) and property round-trips
//! through our own decoders (`props.rs`). Unit tests of each part live beside it.

mod cbs;
mod geofence;
mod props;
mod sbcap;
mod tshark;
