//! CI smoke test of the headless benchmark: 10 sequential D4S edits on the default model, with
//! metrics and plots written.

mod common;

use std::process::Command;

#[test]
fn ten_sequential_d4s_edits_write_metrics_and_plots() {
    let Some(data) = common::shared("data") else {
        return;
    };
    let _ = common::default_model();
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("cf-d4s-10");
    let t0 = std::time::Instant::now();
    let bench_n = |n: &str, extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_d4s"));
        cmd.args([
            "bench",
            "--method",
            "d4s",
            "--data",
            "counterfact",
            "--n",
            n,
            "--eval-every",
            "5",
            "--checkpoint-every",
            "3",
        ])
        .args(["--probes", "arc_easy", "--probe-items", "20", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .args(extra);
        cmd
    };
    let bench = |extra: &[&str]| bench_n("10", extra);
    // Planned as 8 edits and interrupted after 7 (checkpoints after 3, 6 and at the stop), then
    // continued with N = 10 (the cases are the file's first N, so the first 7 stay the same):
    // the run folder ends up as one whole run of 10.
    // Its stderr is a pipe, so the progress bar is hidden and the heartbeat (every edit here)
    // keeps the log informed.
    let stopped = common::run_ok(&mut bench_n(
        "8",
        &["--stop-after", "7", "--progress-every", "0"],
    ));
    let said = String::from_utf8_lossy(&stopped.stdout);
    assert!(said.contains("stopped after 7 of 8 edits"), "{said}");
    let logged = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        logged.contains("D4S: 6/8 edits, ") && logged.contains(" elapsed, ETA "),
        "{logged}"
    );
    assert!(run.join("checkpoint/checkpoint.json").is_file());
    assert!(!run.join("summary.json").exists());
    let ck: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint/checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(ck["edits"], 7, "{ck}");
    // Starting it again without --resume would throw the unfinished run away: refused.
    let err = common::run_err(&mut bench(&[]));
    assert!(
        err.contains("unfinished run") && err.contains("--resume"),
        "{err}"
    );
    // Resuming with other settings is refused, naming what differs.
    let err = common::run_err(&mut bench(&["--resume", "--set", "mom2_update_weight=100"]));
    assert!(err.contains("hparams"), "{err}");
    // Fewer cases than the checkpoint's edits: refused, naming both.
    let err = common::run_err(&mut bench_n("6", &["--resume"]));
    assert!(err.contains("holds 7 edits"), "{err}");
    let resumed = common::run_ok(&mut bench(&["--resume"]));
    let logged = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        logged.contains("the run planned 8 edits; it now goes on to 10"),
        "{logged}"
    );
    assert!(
        !run.join("checkpoint").exists(),
        "a finished run keeps no checkpoint"
    );
    // ...so it cannot be lengthened again.
    let err = common::run_err(&mut bench_n("12", &["--resume"]));
    assert!(err.contains("finished run of 10 edits"), "{err}");
    // Resuming a finished run leaves it as it is.
    let again = common::run_ok(&mut bench(&["--resume"]));
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.contains("already complete"), "{said}");
    eprintln!("bench of 10 edits took {:.0} s", t0.elapsed().as_secs_f64());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let points: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        points
            .iter()
            .map(|p| p["edits"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 5, 10]
    );
    let last = points.last().unwrap();
    assert!(
        last["metrics"]["token"]["efficacy"].as_f64().unwrap() >= 0.5,
        "{last}"
    );
    assert!(last["probes"]["arc_easy"]["metrics"]["acc"].is_number());
    assert_eq!(last["layers"].as_array().unwrap().len(), 5);
    assert!(last["layers"][4]["delta_l1_mean"].as_f64().unwrap() > 0.0);
    let edits = std::fs::read_to_string(run.join("edits.jsonl")).unwrap();
    assert_eq!(edits.lines().count(), 10);
    // Every edit records where its time went and the memory it left resident.
    for line in edits.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(e["timings"]["target"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["timings"]["solve"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["rss_bytes"].as_u64().unwrap() > 100 << 20, "{e}");
        // Counterfactual targets are unlikely for the unedited model: perplexity well above 1.
        assert!(e["target_ppl"].as_f64().unwrap() > 2.0, "{e}");
        assert!(e["target_tokens"].as_f64().unwrap() >= 1.0, "{e}");
        assert!(
            !e["target_new"][0].as_str().unwrap().trim().is_empty(),
            "{e}"
        );
    }
    // Each edited case's outcome at the end, consistent with the final point's means (one
    // rewrite prompt per CounterFact case).
    let outcomes: Vec<serde_json::Value> = std::fs::read_to_string(run.join("cases.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 10);
    let efficacy = outcomes
        .iter()
        .map(|o| o["token"]["efficacy"].as_f64().unwrap())
        .sum::<f64>()
        / 10.0;
    let final_efficacy = last["metrics"]["token"]["efficacy"].as_f64().unwrap();
    assert!(
        (efficacy - final_efficacy).abs() < 1e-9,
        "{efficacy} {last}"
    );
    for o in &outcomes {
        assert!(
            !o["requests"][0]["target"].as_str().unwrap().is_empty(),
            "{o}"
        );
        let unchanged = o["token"]["specificity"].as_f64().unwrap() == 1.0;
        assert_eq!(o.get("changed_neighbours").is_none(), unchanged, "{o}");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["edits"], 10);
    assert!(
        summary["targets"]["ppl"].as_f64().unwrap() > 2.0,
        "{summary}"
    );
    // Diversity of the 10 targets: at least two different ones, entropy within [0, log2 10].
    let distinct = summary["targets"]["distinct"].as_u64().unwrap();
    let entropy = summary["targets"]["entropy_bits"].as_f64().unwrap();
    assert!((2..=10).contains(&distinct), "{summary}");
    assert!(
        entropy > 0.0 && entropy <= 10f64.log2() + 1e-12,
        "{summary}"
    );
    for phases in [&summary["median_timings"], &summary["mean_timings"]] {
        assert!(
            phases["total"].as_f64().unwrap() >= phases["target"].as_f64().unwrap(),
            "{phases}"
        );
    }
    assert!(std::fs::read_to_string(run.join("summary.csv"))
        .unwrap()
        .starts_with("method,edits,efficacy"));
    let svg = std::fs::read_to_string(run.join("metrics.svg")).unwrap();
    assert!(svg.contains("efficacy") && svg.contains("<svg"));
    // The title names the run: method, model, data file and N.
    assert!(
        svg.contains("d4s on ") && svg.contains("counterfact-edit, N = 10"),
        "{svg}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(config["data"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(config["resumed"][0]["after_edits"], 7, "{config}");
    assert_eq!(config["resumed"][0]["planned_before"], 8, "{config}");
    assert_eq!(config["data"]["n"], 10, "{config}");
    // compare over the run (one run is enough to exercise the table and overlays).
    common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_d4s"))
            .arg("compare")
            .arg(&run)
            .arg("--out")
            .arg(out.path().join("cmp")),
    );
    let md = std::fs::read_to_string(out.path().join("cmp/compare.md")).unwrap();
    assert!(md.contains("| cf-d4s-10 | d4s | 10 |"), "{md}");
    // The generation metrics and the intervals reach the summary, the table and the plots.
    for g in ["efficacy_em", "efficacy_f1", "paraphrase_em", "specificity"] {
        let v = summary["gen"][g].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&v), "gen.{g}: {summary}");
    }
    let ci = &summary["intervals"]["token.efficacy"];
    assert!(
        ci["lo"].as_f64().unwrap() <= ci["hi"].as_f64().unwrap(),
        "{summary}"
    );
    assert!(md.contains("| gen EM |") && md.contains(" ±"), "{md}");
    assert!(std::fs::read_to_string(run.join("metrics.svg"))
        .unwrap()
        .contains("gen efficacy_em"));
    assert!(run.join("retention.svg").is_file());
    // Without --out, compare prints the table and writes nothing.
    let here = tempfile::tempdir().unwrap();
    let said = common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_d4s"))
            .current_dir(here.path())
            .arg("compare")
            .arg(&run),
    );
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(said.contains("| cf-d4s-10 | d4s | 10 |"), "{said}");
    assert_eq!(std::fs::read_dir(here.path()).unwrap().count(), 0);
}
