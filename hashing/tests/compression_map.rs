//! The compression map's `.npy` reader on files written here byte by byte as numpy writes them:
//! every supported version and dtype reads back, and every malformed or out-of-range file is
//! rejected with an error that names the problem.

use engram_store_hashing::{CompressError, CompressionMap, CompressionMapError, Layout};

/// A `.npy` file as `np.save` lays it out: magic, version, header length, the header dict padded
/// with spaces to a 64-byte boundary and ended by a newline, then `data`.
fn npy(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let len_size = if major == 1 { 2 } else { 4 };
    let unpadded = 6 + 2 + len_size + dict.len() + 1;
    let header = format!(
        "{dict}{}\n",
        " ".repeat(unpadded.next_multiple_of(64) - unpadded)
    );
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([major, 0]);
    if major == 1 {
        out.extend(
            u16::try_from(header.len())
                .expect("short header")
                .to_le_bytes(),
        );
    } else {
        out.extend(
            u32::try_from(header.len())
                .expect("short header")
                .to_le_bytes(),
        );
    }
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    let fortran = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
}

fn i64s(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i32s(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn parse(bytes: &[u8]) -> Result<CompressionMap, CompressionMapError> {
    CompressionMap::from_npy_bytes(bytes)
}

#[test]
fn reads_every_version_and_dtype() {
    let ids = [0u32, 1, 2, 1, 3, 0];
    for major in [1, 2, 3] {
        let signed: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let narrow: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        for bytes in [
            npy(major, &dict("<i8", false, "(6,)"), &i64s(&signed)),
            npy(major, &dict("<i4", false, "(6,)"), &i32s(&narrow)),
            npy(major, &dict("<u4", false, "(6,)"), &u32s(&ids)),
        ] {
            let map = parse(&bytes).expect("valid file");
            assert_eq!(map.as_slice(), &ids);
            assert_eq!(map.len(), 6);
            assert_eq!(map.compressed_vocab_size(), 4);
        }
    }
    // The extremes of each type that fit.
    let map = parse(&npy(
        1,
        &dict("<i8", false, "(2,)"),
        &i64s(&[0, i64::from(u32::MAX)]),
    ))
    .expect("u32::MAX fits");
    assert_eq!(map.compress(1), Ok(u32::MAX));
    let map = parse(&npy(1, &dict("<u4", false, "(1,)"), &u32s(&[u32::MAX]))).expect("uint32 max");
    assert_eq!(map.compressed_vocab_size(), u64::from(u32::MAX) + 1);
    // An empty map.
    let map = parse(&npy(1, &dict("<i8", false, "(0,)"), &[])).expect("empty");
    assert!(map.is_empty());
    assert_eq!(map.compressed_vocab_size(), 0);
    // Version 3.0 headers are UTF-8.
    let utf8 = "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), 'note': 'é'}";
    let e = parse(&npy(3, utf8, &i32s(&[0]))).expect_err("unknown key");
    assert!(e.to_string().contains("note"), "{e}");
}

/// Whether an error is the one a bad file should produce.
type IsExpected = fn(&CompressionMapError) -> bool;

#[test]
fn rejects_bad_files() {
    let good_dict = dict("<i8", false, "(2,)");
    let data = i64s(&[0, 1]);
    let cases: Vec<(&str, Vec<u8>, IsExpected, &str)> = vec![
        (
            "empty",
            vec![],
            |e| matches!(e, CompressionMapError::BadMagic),
            "magic",
        ),
        (
            "wrong magic",
            b"\x93NUMPX\x01\x00".to_vec(),
            |e| matches!(e, CompressionMapError::BadMagic),
            "magic",
        ),
        (
            "magic only",
            b"\x93NUMPY".to_vec(),
            |e| matches!(e, CompressionMapError::TruncatedHeader { .. }),
            "truncated",
        ),
        (
            "version 4.0",
            [b"\x93NUMPY\x04\x00".as_slice(), &[0; 20]].concat(),
            |e| {
                matches!(
                    e,
                    CompressionMapError::UnsupportedVersion { major: 4, minor: 0 }
                )
            },
            "4.0",
        ),
        (
            "version 1.1",
            [b"\x93NUMPY\x01\x01".as_slice(), &[0; 20]].concat(),
            |e| {
                matches!(
                    e,
                    CompressionMapError::UnsupportedVersion { major: 1, minor: 1 }
                )
            },
            "1.1",
        ),
        (
            "header cut short",
            npy(1, &good_dict, &data)[..40].to_vec(),
            |e| {
                matches!(
                    e,
                    CompressionMapError::TruncatedHeader {
                        len: 40,
                        needed: 128
                    }
                )
            },
            "needs 128",
        ),
        (
            "header not a dict",
            npy(1, "['descr', '<i8']", &data),
            |e| matches!(e, CompressionMapError::BadHeader(_)),
            "expected '{'",
        ),
        (
            "missing shape",
            npy(1, "{'descr': '<i8', 'fortran_order': False}", &data),
            |e| matches!(e, CompressionMapError::BadHeader(_)),
            "missing key 'shape'",
        ),
        (
            "latin-1 header with a non-ASCII byte",
            {
                let mut bytes = npy(1, &good_dict, &data);
                bytes[20] = 0xe9;
                bytes
            },
            |e| matches!(e, CompressionMapError::BadHeader(_)),
            "non-ASCII",
        ),
        (
            "float64",
            npy(1, &dict("<f8", false, "(2,)"), &data),
            |e| matches!(e, CompressionMapError::UnsupportedDtype(d) if d == "<f8"),
            "<f8",
        ),
        (
            "big-endian int64",
            npy(1, &dict(">i8", false, "(2,)"), &data),
            |e| matches!(e, CompressionMapError::UnsupportedDtype(d) if d == ">i8"),
            ">i8",
        ),
        (
            "uint64",
            npy(1, &dict("<u8", false, "(2,)"), &data),
            |e| matches!(e, CompressionMapError::UnsupportedDtype(_)),
            "<u8",
        ),
        (
            "fortran order",
            npy(1, &dict("<i8", true, "(2,)"), &data),
            |e| matches!(e, CompressionMapError::FortranOrder),
            "Fortran",
        ),
        (
            "2-D",
            npy(1, &dict("<i8", false, "(1, 2)"), &data),
            |e| matches!(e, CompressionMapError::NotOneDimensional { shape } if shape == &[1, 2]),
            "[1, 2]",
        ),
        (
            "0-D",
            npy(1, &dict("<i8", false, "()"), &data[..8]),
            |e| matches!(e, CompressionMapError::NotOneDimensional { shape } if shape.is_empty()),
            "1-D",
        ),
        (
            "data shorter than the shape",
            npy(1, &dict("<i8", false, "(3,)"), &data),
            |e| {
                matches!(
                    e,
                    CompressionMapError::DataLength {
                        expected: 24,
                        found: 16
                    }
                )
            },
            "expected 24",
        ),
        (
            "trailing bytes",
            npy(2, &good_dict, &[data.as_slice(), &[0]].concat()),
            |e| {
                matches!(
                    e,
                    CompressionMapError::DataLength {
                        expected: 16,
                        found: 17
                    }
                )
            },
            "17 bytes",
        ),
        (
            "huge shape",
            npy(1, &dict("<i8", false, "(18446744073709551615,)"), &data),
            |e| matches!(e, CompressionMapError::DataLength { .. }),
            "expected",
        ),
        (
            "negative int64",
            npy(1, &good_dict, &i64s(&[0, -5])),
            |e| {
                matches!(
                    e,
                    CompressionMapError::NegativeId {
                        raw_id: 1,
                        value: -5
                    }
                )
            },
            "raw id 1 maps to -5",
        ),
        (
            "negative int32",
            npy(1, &dict("<i4", false, "(1,)"), &i32s(&[-1])),
            |e| {
                matches!(
                    e,
                    CompressionMapError::NegativeId {
                        raw_id: 0,
                        value: -1
                    }
                )
            },
            "-1",
        ),
        (
            "above u32::MAX",
            npy(1, &good_dict, &i64s(&[0, 1 << 32])),
            |e| {
                matches!(
                    e,
                    CompressionMapError::IdTooLarge {
                        raw_id: 1,
                        value: 4_294_967_296
                    }
                )
            },
            "4294967296",
        ),
    ];
    for (what, bytes, matches, needle) in cases {
        match parse(&bytes) {
            Ok(map) => panic!("{what}: accepted as {map:?}"),
            Err(e) => {
                assert!(matches(&e), "{what}: unexpected error {e:?}");
                assert!(
                    e.to_string().contains(needle),
                    "{what}: {e} should mention {needle:?}"
                );
            }
        }
    }
}

#[test]
fn compress_names_the_bad_id() {
    let map = CompressionMap::from_ids(vec![0, 1, 1, 2]);
    assert_eq!(map.compress(3), Ok(2));
    let e = map.compress(4).expect_err("out of range");
    assert_eq!(e, CompressError::UnknownRawId { raw_id: 4, len: 4 });
    assert!(e.to_string().contains("raw token id 4"));
    let mut out = vec![9; 10];
    map.compress_into(&[3, 2, 1], &mut out).expect("in range");
    assert_eq!(out, vec![2, 1, 1]);
    let e = map
        .compress_into(&[0, 1, 70_000], &mut out)
        .expect_err("out of range");
    assert_eq!(
        e,
        CompressError::UnknownRawIdAt {
            position: 2,
            raw_id: 70_000,
            len: 4
        }
    );
    assert!(e.to_string().contains("position 2"));
}

#[test]
fn check_layout_names_ids_without_rows() {
    let layout = Layout::demo();
    let map = CompressionMap::from_ids(vec![0, 98_626, 98_627, 5]);
    let e = map.check_layout(&layout).expect_err("98627 has no rows");
    assert!(matches!(
        e,
        CompressionMapError::OutsideLayout {
            raw_id: 2,
            compressed_id: 98_627,
            compressed_vocab_size: 98_627
        }
    ));
    CompressionMap::from_ids(vec![0, 98_626])
        .check_layout(&layout)
        .expect("fits");
}

#[test]
fn load_names_the_file() {
    let missing = concat!(env!("CARGO_MANIFEST_DIR"), "/no-such-map.npy");
    let e = CompressionMap::load(missing).expect_err("missing");
    assert!(matches!(e, CompressionMapError::Io { .. }));
    assert!(e.to_string().contains("no-such-map.npy"));
    let not_npy = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let e = CompressionMap::load(not_npy).expect_err("not npy");
    assert!(
        matches!(&e, CompressionMapError::InFile { source, .. } if matches!(**source, CompressionMapError::BadMagic))
    );
    assert!(e.to_string().contains("Cargo.toml"));
}
