use super::terms::decode_terms;
use super::*;

fn meta(name: &str) -> SessionMeta {
    SessionMeta {
        format_version: FORMAT_VERSION,
        d4s_version: env!("CARGO_PKG_VERSION").into(),
        name: name.into(),
        created: now(),
        model: ModelRecord {
            spec: "default".into(),
            name: "m".into(),
            sha256: "abc".into(),
            precision: crate::model::Precision::F32,
        },
        method: Method::D4s,
        hparams: HParams::default(),
        stats: StatsConfig::default(),
        stats_corpus_id: "model-samples-s0".into(),
    }
}

#[test]
fn terms_round_trip_and_corruption_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::create(dir.path(), meta("t")).unwrap();
    let t = EditTerms {
        residuals: vec![vec![vec![1.5, -2.0], vec![0.25, 3.0]]],
        keys: vec![vec![
            vec![1.0, 2.0, 3.0],
            vec![f64::MIN_POSITIVE, 0.0, -1e300],
        ]],
    };
    let r = s.write_terms(&t).unwrap();
    assert_eq!(s.read_terms(&r).unwrap(), t);
    let mut bad = r.clone();
    bad.sha256 = "00".into();
    assert!(s.read_terms(&bad).is_err());
    assert!(decode_terms(&[1, 2, 3]).is_none());
}

#[test]
fn journal_tolerates_a_torn_tail_but_not_garbage_inside() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::create(dir.path(), meta("j")).unwrap();
    s.record_note("one").unwrap();
    s.record_note("two").unwrap();
    let path = dir.path().join("j").join(JOURNAL_FILE);
    let good = fs::read(&path).unwrap();
    // Torn last line: a warning, the complete lines survive, reopening truncates it.
    let mut torn = good.clone();
    torn.extend_from_slice(br#"{"event":"note","seq":3,"ti"#);
    fs::write(&path, &torn).unwrap();
    let l = read_journal(&path).unwrap();
    assert_eq!(l.events.len(), 2);
    assert_eq!(l.warnings.len(), 1);
    let (mut s2, _) = Session::open(&dir.path().join("j")).unwrap();
    s2.record_note("three").unwrap();
    assert_eq!(read_journal(&path).unwrap().events.len(), 3);
    // Garbage in the middle: an error naming the line.
    let mut mid = good.clone();
    mid.splice(0..0, b"garbage\n".iter().copied());
    fs::write(&path, &mid).unwrap();
    let e = read_journal(&path).unwrap_err().to_string();
    assert!(e.contains(":1:"), "{e}");
}

#[test]
fn unknown_version_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    Session::create(dir.path(), meta("v")).unwrap();
    let p = dir.path().join("v").join(META_FILE);
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    fs::write(&p, text).unwrap();
    let e = read_meta(&dir.path().join("v")).unwrap_err().to_string();
    assert!(e.contains("99"), "{e}");
    assert!(Session::create(dir.path(), meta("../escape")).is_err());
    assert!(Session::create(dir.path(), meta("")).is_err());
    assert!(Session::create(dir.path(), meta("v")).is_err(), "exists");
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = parse_journal(&bytes, "fuzz");
    }

    #[test]
    fn parser_never_panics_on_jsonish(s in "(\\{\"event\":\"(note|undo|applied)\",\"seq\":[0-9]{1,3},[a-z\":,0-9\\[\\]\\{\\} ]{0,60}\\}\n?){0,5}") {
        let _ = parse_journal(s.as_bytes(), "fuzz");
    }
}
