//! Tests of the classifier as a whole: training, both engines, fallback to the global model, auto-learning.

use std::path::Path;

use super::engine::chi2_tails;
use super::store::TokenDb;
use super::*;

fn config(dir: &Path) -> BayesSettings {
    let mut c = BayesSettings::new(dir);
    c.config.min_spam = 3;
    c.config.min_ham = 3;
    c
}

fn spam(i: usize) -> String {
    let offers = [
        "cheap pills",
        "casino bonus",
        "viagra discount",
        "mortgage rates",
        "lottery winner",
    ];
    format!(
        "From: promo{i}@deals{i}.example.biz\nTo: undisclosed-recipients:;\nSubject: Amazing offer {i} FREE!!!\n\
         Content-Type: text/html\n\n<html><body><font size=1 color=#ffffff>xq{i}</font>\
         <p>Act now for {} and unbeatable savings! Click <a href=\"http://win{i}.example.biz/claim?id={i}\">here</a>\
         to claim your guaranteed prize money. Limited offer, order today, remove me from list.</p></body></html>\n",
        offers[i % offers.len()]
    )
}

fn ham(i: usize) -> String {
    let topics = [
        "the build script",
        "tomorrow's meeting",
        "the patch review",
        "release notes",
        "the kernel bug",
    ];
    format!(
        "From: Alice Example <alice@work.example.org>\nTo: bob@work.example.org\nSubject: Re: question about {}\n\
         In-Reply-To: <{i}@work.example.org>\nContent-Type: text/plain\n\nHi Bob,\n\nI looked at {} again and \
         I think the problem is in the configuration file we discussed on Monday. Could you check the logs \
         and send me the output? Thanks, Alice\n",
        topics[i % topics.len()],
        topics[(i + 2) % topics.len()]
    )
}

#[test]
fn chi2_tails_match_known_values() {
    // Q(x2=2, dof=2) = e^-1.
    let (p, q) = chi2_tails(2.0, 2);
    assert!((q - (-1.0f64).exp()).abs() < 1e-12 && (p + q - 1.0).abs() < 1e-12);
    // Q(x2, 4) = e^-m (1 + m), m = x2/2, on both sides of m = k.
    for m in [0.5f64, 1.5, 3.0, 30.0] {
        let (p, q) = chi2_tails(2.0 * m, 4);
        let want = (-m).exp() * (1.0 + m);
        assert!((q - want).abs() < 1e-12, "{m}: {q} vs {want}");
        assert!((p - (1.0 - want)).abs() < 1e-12);
    }
    // The small side keeps its precision: P(x2 = 0.02, dof = 20) = e^-m Σ_{i≥10} m^i / i! is ~3e-27, not 0.
    let (p, _) = chi2_tails(0.02, 20);
    let m = 0.01f64;
    let mut term = (-m).exp() * m.powi(10) / 3_628_800.0;
    let mut want = 0.0;
    for i in 11..20 {
        want += term;
        term *= m / f64::from(i);
    }
    assert!((p / want - 1.0).abs() < 1e-9, "{p} vs {want}");
    assert_eq!(chi2_tails(0.0, 10), (0.0, 1.0));
    let (p, q) = chi2_tails(1e6, 300);
    assert!(p == 1.0 && q >= 0.0);
}

#[test]
fn bands_pick_the_highest_min() {
    let c = BayesConfig::default();
    assert_eq!(c.band_for(0.0).map(|b| b.name.as_str()), Some("BAYES_00"));
    assert_eq!(c.band_for(0.995).map(|b| b.name.as_str()), Some("BAYES_99"));
    assert_eq!(c.band_for(1.0).map(|b| b.name.as_str()), Some("BAYES_999"));
    assert_eq!(c.band_for(0.5).map(|b| b.name.as_str()), Some("BAYES_50"));
    assert_eq!(c.class_of(0.995), Class::Spam);
    assert_eq!(c.class_of(0.95), Class::Unsure);
    assert_eq!(c.class_of(0.5), Class::Unsure);
    assert_eq!(c.class_of(0.1), Class::Ham);
}

#[test]
fn classifier_separates_a_small_corpus_with_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    for i in 0..30 {
        assert_eq!(
            train_message(&cfg, "u", spam(i).as_bytes(), TrainClass::Spam, false).unwrap(),
            TrainOutcome::Trained
        );
        train_message(&cfg, "u", ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
    }
    for engine in [Engine::Robinson, Engine::Bayespam] {
        cfg.config.engine = engine;
        let scorer = BayesScorer::new(&cfg).unwrap();
        for i in 100..110 {
            let s = scorer
                .score(Some("u"), spam(i).as_bytes(), true)
                .unwrap()
                .unwrap();
            let h = scorer
                .score(Some("u"), ham(i).as_bytes(), false)
                .unwrap()
                .unwrap();
            assert!(
                s.probability > 0.9,
                "{engine:?} spam {i}: {}",
                s.probability
            );
            assert!(h.probability < 0.1, "{engine:?} ham {i}: {}", h.probability);
            assert!(!s.evidence.is_empty());
            assert_eq!(s.model.as_deref(), Some("u"));
        }
    }
    cfg.config.engine = Engine::Robinson;
    let scorer = BayesScorer::new(&cfg).unwrap();
    let r = scorer
        .score(Some("u"), spam(200).as_bytes(), true)
        .unwrap()
        .unwrap();
    assert_eq!(r.class, Class::Spam);
    assert!(r.hits[0].name.starts_with("BAYES_9"), "{:?}", r.hits);
    assert!(r.evidence[0].1 > 0.5 && r.evidence.last().unwrap().1 <= r.evidence[0].1);
}

#[test]
fn too_little_training_gives_none_then_global_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let scorer = BayesScorer::new(&cfg).unwrap();
    assert!(
        scorer
            .score(Some("u"), spam(1).as_bytes(), false)
            .unwrap()
            .is_none()
    );
    assert!(
        scorer
            .score(None, spam(1).as_bytes(), false)
            .unwrap()
            .is_none()
    );
    for i in 0..5 {
        train_message_for(&cfg, None, spam(i).as_bytes(), TrainClass::Spam, false).unwrap();
        train_message_for(&cfg, None, ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
    }
    // The scorer notices the new file without a restart.
    let r = scorer
        .score(Some("u"), spam(50).as_bytes(), false)
        .unwrap()
        .unwrap();
    assert_eq!(r.model, None);
    cfg.config.fallback_to_global = false;
    let strict = BayesScorer::new(&cfg).unwrap();
    assert!(
        strict
            .score(Some("u"), spam(50).as_bytes(), false)
            .unwrap()
            .is_none()
    );
    assert!(
        strict
            .score(None, spam(50).as_bytes(), false)
            .unwrap()
            .is_some()
    );
}

#[test]
fn duplicates_untrain_and_retrain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let m = spam(1);
    let t = |class, untrain| train_message(&cfg, "u", m.as_bytes(), class, untrain).unwrap();
    assert_eq!(t(TrainClass::Spam, false), TrainOutcome::Trained);
    assert_eq!(t(TrainClass::Spam, false), TrainOutcome::AlreadyTrained);
    assert_eq!(t(TrainClass::Ham, true), TrainOutcome::NotTrained);
    assert_eq!(t(TrainClass::Ham, false), TrainOutcome::Retrained);
    let db = TokenDb::open(&model_path(dir.path(), Some("u"))).unwrap();
    assert_eq!((db.nspam(), db.nham()), (0, 1));
    assert_eq!(t(TrainClass::Ham, true), TrainOutcome::Untrained);
    let db = TokenDb::open(&model_path(dir.path(), Some("u"))).unwrap();
    assert_eq!((db.nspam(), db.nham(), db.len()), (0, 0, 0));
}

#[test]
fn autolearn_is_off_by_default_and_batches_when_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    for i in 0..5 {
        train_message(&cfg, "u", spam(i).as_bytes(), TrainClass::Spam, false).unwrap();
        train_message(&cfg, "u", ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
    }
    let path = model_path(dir.path(), Some("u"));
    {
        let scorer = BayesScorer::new(&cfg).unwrap();
        for i in 10..20 {
            scorer.score(Some("u"), spam(i).as_bytes(), false).unwrap();
        }
    }
    assert_eq!(TokenDb::open(&path).unwrap().nspam(), 5);
    cfg.config.autolearn_spam = Some(0.9);
    {
        let scorer = BayesScorer::new(&cfg).unwrap();
        for i in 10..20 {
            scorer.score(Some("u"), spam(i).as_bytes(), false).unwrap();
            scorer.score(Some("u"), spam(i).as_bytes(), false).unwrap();
        }
    }
    assert_eq!(
        TokenDb::open(&path).unwrap().nspam(),
        15,
        "flushed on drop, each message once"
    );
}

#[test]
fn scoring_only_queues_and_learn_pending_writes_full_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    for i in 0..5 {
        train_message(&cfg, "u", spam(i).as_bytes(), TrainClass::Spam, false).unwrap();
        train_message(&cfg, "u", ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
    }
    let path = model_path(dir.path(), Some("u"));
    cfg.config.autolearn_spam = Some(0.9);
    let scorer = BayesScorer::new(&cfg).unwrap();
    for i in 0..AUTOLEARN_BATCH - 1 {
        scorer
            .score(Some("u"), spam(100 + i).as_bytes(), false)
            .unwrap();
    }
    assert_eq!(scorer.learn_pending().unwrap(), 0, "no full batch yet");
    for i in AUTOLEARN_BATCH - 1..AUTOLEARN_BATCH + 3 {
        scorer
            .score(Some("u"), spam(100 + i).as_bytes(), false)
            .unwrap();
    }
    assert_eq!(
        TokenDb::open(&path).unwrap().nspam(),
        5,
        "scoring never writes"
    );
    assert_eq!(scorer.learn_pending().unwrap(), AUTOLEARN_BATCH + 3);
    assert_eq!(
        TokenDb::open(&path).unwrap().nspam(),
        5 + AUTOLEARN_BATCH as u32 + 3
    );
    assert_eq!(scorer.learn_pending().unwrap(), 0);
    scorer
        .score(Some("u"), spam(500).as_bytes(), false)
        .unwrap();
    scorer.flush().unwrap();
    assert_eq!(
        TokenDb::open(&path).unwrap().nspam(),
        5 + AUTOLEARN_BATCH as u32 + 4,
        "flush writes a partial batch"
    );
}

#[test]
fn scorer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<BayesScorer>();
}
