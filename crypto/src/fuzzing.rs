//! Fuzz harness bodies, shared by the cargo-fuzz targets (`tools/fuzz`) and the corpus replay test that
//! CI runs on stable. Each asserts the crate's promises on arbitrary input.

use crate::{Method, NonceGen, OpenError, PacketCrypto, derive_key};

fn all() -> &'static [PacketCrypto] {
    static ALL: std::sync::OnceLock<Vec<PacketCrypto>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let pass = derive_key(b"fuzz");
        Method::ALL.iter().map(|&m| PacketCrypto::new(m, &pass)).collect()
    })
}

/// `open` of arbitrary bytes under every method: a range inside the buffer or a typed error, never a
/// panic; and a seal of the same bytes as plaintext opens back to them.
pub fn open_any(data: &[u8]) {
    let mut rng = NonceGen::from_seed([9; 32]);
    for c in all() {
        let mut buf = data.to_vec();
        match c.open(&mut buf) {
            Ok(r) => {
                assert!(r.start <= r.end && r.end <= buf.len());
                assert_eq!(r.start, c.header_len());
            }
            Err(OpenError::TooShort { len, min }) => assert!(len < min && len == data.len()),
            Err(OpenError::Checksum | OpenError::Auth) => {}
        }
        let mut sealed = vec![0u8; c.header_len()];
        sealed.extend_from_slice(data);
        sealed.resize(sealed.len() + c.trailer_len(), 0);
        c.seal(&mut rng, &mut sealed).expect("sized for the overhead");
        let r = c.open(&mut sealed).expect("own seal opens");
        assert_eq!(&sealed[r], data);
    }
}
