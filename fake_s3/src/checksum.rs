//! Digests and checksums: MD5 (ETags, Content-MD5), SHA-256 (SigV4 payload
//! hashes), and the flexible checksums S3 accepts (`x-amz-checksum-*`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::error::S3Error;

const CRC64_NVME: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_NVME);

/// A checksum algorithm of S3's flexible checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

pub const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

impl ChecksumAlgorithm {
    /// The name in `x-amz-checksum-algorithm` and `x-amz-sdk-checksum-algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    /// The header (and trailer) that carries the value.
    pub fn header(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        ALGORITHMS.into_iter().find(|algorithm| algorithm.name().eq_ignore_ascii_case(name))
    }

    pub fn from_header(header: &str) -> Option<ChecksumAlgorithm> {
        ALGORITHMS.into_iter().find(|algorithm| algorithm.header().eq_ignore_ascii_case(header))
    }

    /// The checksum of `data`, base64 as S3 sends it.
    pub fn compute(self, data: &[u8]) -> String {
        match self {
            ChecksumAlgorithm::Crc32 => BASE64.encode(crc32fast::hash(data).to_be_bytes()),
            ChecksumAlgorithm::Crc32c => BASE64.encode(crc32c::crc32c(data).to_be_bytes()),
            ChecksumAlgorithm::Crc64Nvme => BASE64.encode(CRC64_NVME.checksum(data).to_be_bytes()),
            ChecksumAlgorithm::Sha1 => BASE64.encode(Sha1::digest(data)),
            ChecksumAlgorithm::Sha256 => BASE64.encode(Sha256::digest(data)),
        }
    }

    /// Checks a value a client sent for `data`.
    pub fn verify(self, data: &[u8], expected: &str) -> Result<(), S3Error> {
        if self.compute(data) == expected.trim() {
            Ok(())
        } else {
            Err(S3Error::BadChecksum(self.name()))
        }
    }
}

/// A checksum kept with an object: its algorithm and base64 value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub value: String,
}

pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5(data))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Checks a `Content-MD5` header (base64 of the body's MD5).
pub fn verify_content_md5(data: &[u8], header: &[u8]) -> Result<(), S3Error> {
    let expected = BASE64
        .decode(header.trim_ascii())
        .ok()
        .filter(|digest| digest.len() == 16)
        .ok_or_else(|| S3Error::InvalidDigest("The Content-MD5 you specified was invalid.".into()))?;
    if expected == md5(data) {
        Ok(())
    } else {
        Err(S3Error::BadDigest)
    }
}

/// The ETag of a multipart object: the MD5 of the parts' MD5s, then `-N`.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut hasher = Md5::new();
    for digest in part_md5s {
        hasher.update(digest);
    }
    format!("{}-{}", hex::encode(hasher.finalize()), part_md5s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Values from the CRC catalogue's check string and RFC 1321 / FIPS 180.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(CRC64_NVME.checksum(b"123456789"), 0xAE8B_1486_0A79_9888);
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(ChecksumAlgorithm::Crc32.compute(b"hello"), "NhCmhg==");
        assert_eq!(ChecksumAlgorithm::Sha1.compute(b"abc"), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
    }

    #[test]
    fn content_md5_checks() {
        let good = BASE64.encode(md5(b"data"));
        assert_eq!(verify_content_md5(b"data", good.as_bytes()), Ok(()));
        assert_eq!(verify_content_md5(b"other", good.as_bytes()), Err(S3Error::BadDigest));
        assert!(matches!(verify_content_md5(b"data", b"not base64!"), Err(S3Error::InvalidDigest(_))));
        assert!(matches!(verify_content_md5(b"data", b"AAAA"), Err(S3Error::InvalidDigest(_))));
    }

    #[test]
    fn names_round_trip() {
        for algorithm in ALGORITHMS {
            assert_eq!(ChecksumAlgorithm::from_name(algorithm.name()), Some(algorithm));
            assert_eq!(ChecksumAlgorithm::from_header(algorithm.header()), Some(algorithm));
        }
    }
}
