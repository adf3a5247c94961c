use super::*;

fn chart() -> LineChart {
    LineChart {
        title: "‖ΔW‖₁ per layer & <edit>".into(),
        x_label: "edits".into(),
        y_label: "mean |ΔW|".into(),
        series: vec![
            Series {
                label: "layer 4".into(),
                points: (0..50)
                    .map(|i| (i as f64 * 100.0, (i as f64).sqrt() * 1e-4))
                    .collect(),
                ..Default::default()
            },
            Series {
                label: "layer 5".into(),
                points: vec![
                    (0.0, 1e-4),
                    (100.0, f64::NAN),
                    (200.0, 3e-4),
                    (f64::INFINITY, 1.0),
                    (300.0, 2e-4),
                ],
                ..Default::default()
            },
            Series {
                label: "layer 6 (empty)".into(),
                points: vec![],
                band: vec![],
            },
        ],
        y_range: None,
        log_y: false,
    }
}

fn svg_of(files: &[PathBuf]) -> String {
    std::fs::read_to_string(
        files
            .iter()
            .find(|f| f.extension().unwrap() == "svg")
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn writes_svg_with_every_label_and_png_iff_a_font_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("sub/norms.layer");
    let files = render(&chart(), &stem).unwrap();
    assert_eq!(files[0], dir.path().join("sub/norms.layer.svg"));
    let svg = svg_of(&files);
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    for label in [
        "layer 4",
        "layer 5",
        "layer 6 (empty) (no data)",
        "edits",
        "mean |ΔW|",
        "&lt;edit&gt;",
    ] {
        assert!(svg.contains(label), "the SVG lacks {label:?}");
    }
    let png = dir.path().join("sub/norms.layer.png");
    assert_eq!(png.exists(), font().is_some());
    assert_eq!(files.len(), 1 + font().is_some() as usize);
    if font().is_some() {
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
    // Three series, three distinct stroke colours.
    for i in 0..3 {
        let c = color(i);
        assert!(
            svg.contains(&format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)),
            "colour {i}"
        );
    }
}

#[test]
fn svg_lays_out_without_a_font() {
    // No font is registered under this family, so any text measurement through a font
    // would fail the drawing: the SVG path must not depend on one.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (400, 300)).into_drawing_area();
        draw_figure(root, &[chart()], (1, 1), "d4s-no-such-font").unwrap();
    }
    assert!(svg.contains("layer 5") && svg.contains(r#"font-family="d4s-no-such-font""#));
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let all_bad = LineChart {
        title: String::new(),
        x_label: String::new(),
        y_label: String::new(),
        series: vec![Series {
            label: "nan".into(),
            points: vec![(f64::NAN, f64::NAN), (1.0, f64::NEG_INFINITY)],
            ..Default::default()
        }],
        y_range: Some((f64::NAN, 1.0)),
        log_y: true,
    };
    let empty = LineChart {
        series: vec![],
        ..all_bad.clone()
    };
    let single = LineChart {
        series: vec![Series {
            label: "one".into(),
            points: vec![(3.0, 0.0), (3.0, -1.0), (3.0, 5.0)],
            ..Default::default()
        }],
        y_range: Some((1.0, 10.0)),
        ..all_bad.clone()
    };
    let flat = LineChart {
        log_y: false,
        y_range: Some((2.0, 1.0)),
        ..single.clone()
    };
    let huge = LineChart {
        series: vec![Series {
            label: "extremes".into(),
            points: vec![
                (-f64::MAX, -f64::MAX),
                (f64::MAX, f64::MAX),
                (0.0, f64::MIN_POSITIVE),
            ],
            ..Default::default()
        }],
        y_range: None,
        ..flat.clone()
    };
    let ulp = LineChart {
        series: vec![Series {
            label: "one ulp".into(),
            points: vec![(1.0, 1.0), (1.0 + f64::EPSILON, 1.0 + 2.0 * f64::EPSILON)],
            ..Default::default()
        }],
        y_range: None,
        ..flat.clone()
    };
    let ulp_range = LineChart {
        y_range: Some((1e200, 1e200 * (1.0 + f64::EPSILON))),
        ..ulp.clone()
    };
    let huge_log = LineChart {
        log_y: true,
        ..huge.clone()
    };
    for (i, c) in [all_bad, empty, single, flat, huge, huge_log, ulp, ulp_range]
        .iter()
        .enumerate()
    {
        render(c, &dir.path().join(format!("c{i}"))).unwrap();
    }
    assert!(render_grid(&[], 2, &dir.path().join("none")).is_err());
}

#[test]
fn grid_holds_every_panel() {
    let dir = tempfile::tempdir().unwrap();
    let mut charts = vec![chart(), chart(), chart()];
    charts[1].title = "second panel".into();
    charts[2].log_y = true;
    charts[2].title = "third panel".into();
    let files = render_grid(&charts, 2, &dir.path().join("grid")).unwrap();
    let svg = svg_of(&files);
    assert!(svg.contains("second panel") && svg.contains("third panel"));
    assert!(
        svg.contains(r#"width="1280" height="840""#),
        "{}",
        &svg[..200]
    );
}

#[test]
fn helpers() {
    let edits = tick_format(&(0.0..5000.0), false);
    assert_eq!((edits(&1000.0), edits(&0.0)), ("1000".into(), "0".into()));
    let norms = tick_format(&(0.0..0.0035), false);
    assert_eq!(
        (norms(&0.0005), norms(&0.001)),
        ("0.0005".into(), "0.001".into())
    );
    let tiny = tick_format(&(-3e-5..3e-5), false);
    assert_eq!(tiny(&-2.5e-5), "-2.5e-5");
    let log = tick_format(&(1e-4..1e-2), true);
    assert_eq!((log(&1e-4), log(&1e-3)), ("1e-4".into(), "1e-3".into()));
    assert_eq!(tick_format(&(0.5..20.0), true)(&10.0), "10");
    assert_eq!(
        runs(
            &[(0.0, 1.0), (1.0, f64::NAN), (2.0, 2.0), (3.0, 3.0)],
            |_, _| true
        )
        .len(),
        2
    );
    assert_eq!(fit([2.0, 2.0].into_iter(), false), 1.5..2.5);
    assert_eq!(fit(std::iter::empty(), false), 0.0..1.0);
    let r = fit([1.0, 100.0].into_iter(), true);
    assert!(r.start < 1.0 && r.start > 0.0 && r.end > 100.0);
    assert_eq!(
        with_suffix(Path::new("a/b.c"), ".svg"),
        PathBuf::from("a/b.c.svg")
    );
    assert_ne!(color(0), color(1));
    assert_ne!(color(10), color(11));
}

#[test]
fn interval_bands_are_shaded_polygons_and_lone_points_get_whiskers() {
    let dir = tempfile::tempdir().unwrap();
    let banded = LineChart {
        title: "bands".into(),
        x_label: "edits".into(),
        y_label: "score".into(),
        series: vec![
            Series {
                label: "efficacy".into(),
                points: vec![(0.0, 0.5), (10.0, 0.6), (20.0, 0.7)],
                // The last band reaches past the range: clamped, not dropped.
                band: vec![(0.0, 0.4, 0.6), (10.0, 0.5, 0.7), (20.0, 0.6, 1.3)],
            },
            Series {
                label: "gen".into(),
                points: vec![(20.0, 0.3)],
                band: vec![(20.0, 0.2, 0.4), (30.0, f64::NAN, 0.5)],
            },
        ],
        y_range: Some((0.0, 1.0)),
        log_y: false,
    };
    let svg = svg_of(&render(&banded, &dir.path().join("bands")).unwrap());
    assert_eq!(svg.matches("<polygon").count(), 1, "one shaded band");
    assert!(svg.contains("opacity=\"0.18\""), "translucent: {svg}");
    let plain = LineChart {
        series: banded
            .series
            .iter()
            .map(|s| Series {
                band: vec![],
                ..s.clone()
            })
            .collect(),
        ..banded.clone()
    };
    let svg_plain = svg_of(&render(&plain, &dir.path().join("plain")).unwrap());
    assert_eq!(svg_plain.matches("<polygon").count(), 0);
    // The whisker of the lone point is one more path than the plain chart has.
    assert_eq!(
        svg.matches("<polyline").count(),
        svg_plain.matches("<polyline").count() + 1
    );
}
