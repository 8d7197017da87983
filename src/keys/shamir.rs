//! Shamir's secret sharing of the volume key in GF(256), by the `blahaj`
//! crate, shared by escrow's threshold (`keys::escrow`) and the unlock pins'
//! threshold (`keys::pins`). A share is blahaj's byte form: one byte of x
//! (1 to 255), then one byte per key byte, which scripts/combine-shares.py
//! combines by hand. With threshold 1 there is no split: each part is the
//! key itself, so any one opens.

use zeroize::Zeroizing;

use crate::keys::key::VolumeKey;

/// `n` parts of `key`, any `t` of which give it back: the key itself with
/// `t` = 1, else blahaj's shares x = 1..=n. Each part wipes itself on drop
/// (blahaj's own shares too, with its `zeroize_memory` feature); the
/// dealer's polynomial coefficients do not, and live only during this call,
/// in memory that `key::harden_process` keeps out of swap and cores.
pub fn split(key: &VolumeKey, t: u32, n: usize) -> Vec<Zeroizing<Vec<u8>>> {
    if t <= 1 {
        return (0..n)
            .map(|_| Zeroizing::new(key.as_bytes().to_vec()))
            .collect();
    }
    blahaj::Sharks(t as u8)
        .dealer(key.as_bytes())
        .take(n)
        .map(|s| Zeroizing::new(Vec::from(&s)))
        .collect()
}

/// The key from `t` parts (what `split` made): the first part with `t` = 1,
/// else the shares combined. Each part must be of a `key_bits` key. The
/// error names what is wrong, never a byte of a part.
pub fn combine(t: u32, parts: &[&[u8]], key_bits: u32) -> Result<Zeroizing<Vec<u8>>, String> {
    let key_bytes = key_bits as usize / 8;
    if parts.len() < t.max(1) as usize {
        return Err(format!("{} parts of the {t} needed", parts.len()));
    }
    if t <= 1 {
        let k = parts[0];
        if k.len() != key_bytes {
            return Err(format!(
                "a part of {} bytes, not the {key_bits}-bit key",
                k.len()
            ));
        }
        return Ok(Zeroizing::new(k.to_vec()));
    }
    let shares = parts
        .iter()
        .map(|p| blahaj::Share::try_from(*p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a share does not parse: {e}"))?;
    if shares.iter().any(|s| s.y.len() != key_bytes) {
        return Err(format!("a share is not of a {key_bits}-bit key"));
    }
    let key = Zeroizing::new(
        blahaj::Sharks(t as u8)
            .recover(&shares)
            .map_err(|e| format!("combining the shares: {e}"))?,
    );
    if key.len() != key_bytes {
        return Err(format!(
            "the shares give {} bits, not {key_bits}",
            key.len() * 8
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_t_of_n_parts_give_the_key_and_fewer_do_not() {
        let key = VolumeKey::generate(512).unwrap();
        let one = split(&key, 1, 3);
        assert!(one.iter().all(|p| p.as_slice() == key.as_bytes()));
        assert_eq!(
            combine(1, &[&one[2]], 512).unwrap().as_slice(),
            key.as_bytes()
        );
        let parts = split(&key, 2, 3);
        assert!(parts.iter().all(|p| p.len() == 65));
        for (a, b) in [(0, 1), (0, 2), (2, 1)] {
            let k = combine(2, &[&parts[a], &parts[b]], 512).unwrap();
            assert_eq!(k.as_slice(), key.as_bytes(), "{a} {b}");
        }
        assert!(combine(2, &[&parts[0]], 512).is_err());
        // Two copies of one share are not two shares.
        let same = combine(2, &[&parts[0], &parts[0]], 512);
        assert!(same.map(|k| k.as_slice() != key.as_bytes()).unwrap_or(true));
        assert!(combine(2, &[&parts[0], &parts[1]], 256).is_err());
        assert!(combine(1, &[&parts[0]], 512).is_err());
    }
}
