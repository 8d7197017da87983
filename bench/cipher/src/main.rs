//! XTS throughput, one core, 4096-byte sectors (ephemera's `luks.sector_size`):
//! aes-xts and twofish-xts at 256- and 512-bit XTS keys (two cipher keys of
//! 128 or 256 bits). The aes crate uses AES-NI when the CPU has it (detected
//! at run time), as the kernel's aesni-intel does; twofish has no hardware
//! help, in userspace as in the kernel (twofish-avx-x86_64 batches blocks
//! with AVX, which this crate does not, so its figure is a lower bound for
//! the kernel's).

use std::time::Instant;

use aes::{Aes128, Aes256};
use cipher::{BlockCipher, BlockDecrypt, BlockEncrypt, KeyInit};
use twofish::Twofish;
use xts_mode::{get_tweak_default, Xts128};

const SECTOR: usize = 4096;
const BUF: usize = 64 << 20;
const ROUNDS: usize = 5;

/// MB/s (10^6 bytes) of encryption, then decryption: the best of ROUNDS.
fn run<C: BlockCipher + BlockEncrypt + BlockDecrypt + Clone>(xts: &Xts128<C>) -> (f64, f64) {
    let mut buf = vec![0x5au8; BUF];
    let (mut enc, mut dec) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        xts.encrypt_area(&mut buf, SECTOR, 0, get_tweak_default);
        enc = enc.max(BUF as f64 / t.elapsed().as_secs_f64() / 1e6);
        let t = Instant::now();
        xts.decrypt_area(&mut buf, SECTOR, 0, get_tweak_default);
        dec = dec.max(BUF as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    assert!(
        buf.iter().all(|&b| b == 0x5a),
        "decryption did not round-trip"
    );
    (enc, dec)
}

/// libgcrypt (Debian's libgcrypt20, cryptsetup's userspace crypto backend):
/// table-driven twofish with AVX2 bulk paths, AES with AES-NI/VAES, XTS
/// over whole sectors, so much nearer the kernel's implementations than the
/// RustCrypto crates.
mod gcry {
    use std::ffi::{c_char, c_int, c_uint, c_void};
    use std::time::Instant;

    #[link(name = "gcrypt")]
    extern "C" {
        fn gcry_check_version(req: *const c_char) -> *const c_char;
        fn gcry_cipher_open(h: *mut *mut c_void, algo: c_int, mode: c_int, flags: c_uint)
            -> c_uint;
        fn gcry_cipher_setkey(h: *mut c_void, k: *const u8, l: usize) -> c_uint;
        fn gcry_cipher_setiv(h: *mut c_void, iv: *const u8, l: usize) -> c_uint;
        fn gcry_cipher_encrypt(
            h: *mut c_void,
            o: *mut u8,
            ol: usize,
            i: *const u8,
            il: usize,
        ) -> c_uint;
        fn gcry_cipher_decrypt(
            h: *mut c_void,
            o: *mut u8,
            ol: usize,
            i: *const u8,
            il: usize,
        ) -> c_uint;
        fn gcry_cipher_close(h: *mut c_void);
    }
    pub const AES128: c_int = 7;
    pub const AES256: c_int = 9;
    pub const TWOFISH: c_int = 10;
    pub const TWOFISH128: c_int = 303;
    const XTS: c_int = 13;

    /// Encrypt and decrypt MB/s, best of `rounds`, one sector per call
    /// with its number as the tweak (plain64), as dm-crypt does.
    pub fn run(
        algo: c_int,
        key_bytes: usize,
        buf: usize,
        sector: usize,
        rounds: usize,
    ) -> (f64, f64) {
        unsafe {
            assert!(!gcry_check_version(std::ptr::null()).is_null());
            let mut h = std::ptr::null_mut();
            assert_eq!(
                gcry_cipher_open(&mut h, algo, XTS, 0),
                0,
                "gcry_cipher_open {algo}"
            );
            let key: Vec<u8> = (0..key_bytes as u8).collect();
            assert_eq!(
                gcry_cipher_setkey(h, key.as_ptr(), key.len()),
                0,
                "setkey {algo}"
            );
            let mut data = vec![0x5au8; buf];
            let (mut enc, mut dec) = (0f64, 0f64);
            for _ in 0..rounds {
                for (pass, best) in [(0, &mut enc), (1, &mut dec)] {
                    let t = Instant::now();
                    for (n, s) in data.chunks_mut(sector).enumerate() {
                        let mut iv = [0u8; 16];
                        iv[..8].copy_from_slice(&(n as u64).to_le_bytes());
                        gcry_cipher_setiv(h, iv.as_ptr(), 16);
                        let r = if pass == 0 {
                            gcry_cipher_encrypt(h, s.as_mut_ptr(), s.len(), std::ptr::null(), 0)
                        } else {
                            gcry_cipher_decrypt(h, s.as_mut_ptr(), s.len(), std::ptr::null(), 0)
                        };
                        assert_eq!(r, 0);
                    }
                    *best = best.max(buf as f64 / t.elapsed().as_secs_f64() / 1e6);
                }
            }
            gcry_cipher_close(h);
            assert!(data.iter().all(|&b| b == 0x5a), "gcrypt did not round-trip");
            (enc, dec)
        }
    }
}

fn main() {
    let k = [7u8; 32];
    let aes_ni = std::arch::is_x86_feature_detected!("aes");
    println!("# CPU AES instructions: {aes_ni}; {} MiB buffer, {SECTOR}-byte sectors, best of {ROUNDS}, one core", BUF >> 20);
    println!("| cipher (RustCrypto) | XTS key | encrypt MB/s | decrypt MB/s |");
    println!("| --- | --- | --- | --- |");
    let rows: Vec<(&str, u32, (f64, f64))> = vec![
        (
            "aes-xts-plain64",
            256,
            run(&Xts128::new(
                Aes128::new_from_slice(&k[..16]).unwrap(),
                Aes128::new_from_slice(&k[16..]).unwrap(),
            )),
        ),
        (
            "aes-xts-plain64",
            512,
            run(&Xts128::new(
                Aes256::new_from_slice(&k).unwrap(),
                Aes256::new_from_slice(&[9u8; 32]).unwrap(),
            )),
        ),
        (
            "twofish-xts-plain64",
            256,
            run(&Xts128::new(
                Twofish::new_from_slice(&k[..16]).unwrap(),
                Twofish::new_from_slice(&k[16..]).unwrap(),
            )),
        ),
        (
            "twofish-xts-plain64",
            512,
            run(&Xts128::new(
                Twofish::new_from_slice(&k).unwrap(),
                Twofish::new_from_slice(&[9u8; 32]).unwrap(),
            )),
        ),
    ];
    for (c, bits, (e, d)) in &rows {
        println!("| {c} | {bits} | {e:.0} | {d:.0} |");
    }
    let tf = rows[3].2 .0;
    let aes = rows[1].2 .0;
    println!(
        "# RustCrypto aes-xts/twofish-xts at 512-bit keys, encrypt: {:.1}x",
        aes / tf
    );
    println!();
    println!("| cipher (libgcrypt) | XTS key | encrypt MB/s | decrypt MB/s |");
    println!("| --- | --- | --- | --- |");
    let g = [
        ("aes-xts-plain64", 256, gcry::AES128),
        ("aes-xts-plain64", 512, gcry::AES256),
        ("twofish-xts-plain64", 256, gcry::TWOFISH128),
        ("twofish-xts-plain64", 512, gcry::TWOFISH),
    ];
    let mut res = Vec::new();
    for (c, bits, algo) in g {
        let (e, d) = gcry::run(algo, bits as usize / 8, BUF, SECTOR, ROUNDS);
        println!("| {c} | {bits} | {e:.0} | {d:.0} |");
        res.push(e);
    }
    println!(
        "# libgcrypt aes-xts/twofish-xts at 512-bit keys, encrypt: {:.1}x",
        res[1] / res[3]
    );
}
