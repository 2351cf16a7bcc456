//! The Bayesian classifier end to end through the library: training, scoring through `Filter`, the store noticing
//! another writer, and both engines separating a small self-made corpus.

use std::path::Path;

use popguard::config::Config;
use popguard::filter::bayes::store::TokenDb;
use popguard::filter::bayes::{
    self, BayesScorer, Engine, TrainClass, TrainOutcome, Trainer, model_path, train_message,
};
use popguard::filter::{Filter, ScoreOptions};

const SPAM_LINES: &[&str] = &[
    "Get rich quick with our guaranteed money making system",
    "Cheap meds without prescription, discreet shipping worldwide",
    "You have been selected to receive a free vacation package",
    "Lowest mortgage rates, refinance today and save thousands",
    "Hot singles in your area are waiting, click now",
];
const HAM_LINES: &[&str] = &[
    "The nightly build failed in the parser tests again",
    "Can we move the design review to Thursday afternoon",
    "Attached are the minutes from yesterday's planning meeting",
    "I pushed a fix for the race in the connection pool",
    "Please review the pull request before the release branch is cut",
];

fn spam(i: usize) -> Vec<u8> {
    format!(
        "From: Best Deals <offers{i}@promo-{}.example.biz>\r\nTo: undisclosed-recipients:;\r\n\
         Subject: {} !!!\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=iso-8859-1\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n<html><body><p>{} =E2=80=93 order now!</p>\
         <a href=3D\"http://click{i}.promo.example.biz/r?id=3D{i}\">Click here</a>\
         <font color=3D#ffffff size=3D1>{}</font></body></html>\r\n",
        i % 7,
        SPAM_LINES[i % SPAM_LINES.len()].to_uppercase(),
        SPAM_LINES[(i + 1) % SPAM_LINES.len()],
        HAM_LINES[i % HAM_LINES.len()],
    )
    .into_bytes()
}

fn ham(i: usize) -> Vec<u8> {
    format!(
        "From: Dev Team <dev{}@lists.example.org>\r\nTo: team@lists.example.org\r\n\
         Subject: Re: {}\r\nIn-Reply-To: <{i}@lists.example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         {}.\r\n\r\n> {}\r\n\r\nThanks,\r\nSam\r\n",
        i % 4,
        HAM_LINES[i % HAM_LINES.len()],
        HAM_LINES[(i + 2) % HAM_LINES.len()],
        HAM_LINES[(i + 3) % HAM_LINES.len()],
    )
    .into_bytes()
}

fn config(dir: &Path) -> Config {
    let mut c = Config {
        data_dir: Some(dir.to_owned()),
        ..Config::default()
    };
    c.bayes.min_spam = 5;
    c.bayes.min_ham = 5;
    c
}

fn train_corpus(cfg: &Config, user: Option<&str>, n: usize) {
    let mut t = Trainer::open(&cfg.bayes_settings(), user).unwrap();
    for i in 0..n {
        assert_eq!(
            t.train(&spam(i), TrainClass::Spam, false).unwrap(),
            TrainOutcome::Trained
        );
        assert_eq!(
            t.train(&ham(i), TrainClass::Ham, false).unwrap(),
            TrainOutcome::Trained
        );
    }
    t.commit().unwrap();
}

#[test]
fn both_engines_separate_unseen_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    train_corpus(&cfg, Some("alice"), 40);
    for engine in [Engine::Robinson, Engine::Bayespam] {
        cfg.bayes.engine = engine;
        let scorer = BayesScorer::new(&cfg.bayes_settings()).unwrap();
        let mut worst_spam: f64 = 1.0;
        let mut worst_ham: f64 = 0.0;
        for i in 1000..1030 {
            let s = scorer
                .score(Some("alice"), &spam(i), false)
                .unwrap()
                .unwrap();
            let h = scorer
                .score(Some("alice"), &ham(i), false)
                .unwrap()
                .unwrap();
            worst_spam = worst_spam.min(s.probability);
            worst_ham = worst_ham.max(h.probability);
        }
        assert!(
            worst_spam > 0.9 && worst_ham < 0.1,
            "{engine:?}: lowest spam {worst_spam}, highest ham {worst_ham}"
        );
    }
}

#[tokio::test]
async fn filter_verdict_carries_bayes_probability_bands_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    train_corpus(&cfg, Some("alice"), 30);
    let filter = Filter::new(&cfg.filter_settings()).unwrap();
    let opts = ScoreOptions {
        network: false,
        explain: true,
    };
    let v = filter.score(Some("alice"), &spam(500), &opts).await;
    let p = v.bayes.expect("bayes consulted");
    assert!(p > 0.99, "{p}");
    assert!(
        v.hits.iter().any(|h| h.name.starts_with("BAYES_99")),
        "{:?}",
        v.hits
    );
    assert!(
        v.bayes_evidence
            .iter()
            .any(|(t, p)| *p > 0.5 && !t.is_empty())
    );
    let v = filter.score(Some("alice"), &ham(500), &opts).await;
    assert!(v.bayes.unwrap() < 0.01);
    assert!(
        v.hits.iter().any(|h| h.name == "BAYES_00" && h.score < 0.0),
        "{:?}",
        v.hits
    );
    // Bayes alone never makes a message spam with the default bands: the rules must agree.
    let max_band = cfg
        .bayes
        .bands
        .iter()
        .map(|b| b.score)
        .fold(f64::MIN, f64::max);
    assert!(max_band < cfg.filter.spam_threshold);
}

#[test]
fn untrained_users_get_no_bayes_opinion() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.bayes.fallback_to_global = false;
    train_corpus(&cfg, Some("alice"), 3); // below min_spam/min_ham
    let scorer = BayesScorer::new(&cfg.bayes_settings()).unwrap();
    assert!(
        scorer
            .score(Some("alice"), &spam(1), false)
            .unwrap()
            .is_none()
    );
    assert!(
        scorer
            .score(Some("bob"), &spam(1), false)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_running_scorer_sees_training_done_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let scorer = BayesScorer::new(&cfg.bayes_settings()).unwrap();
    assert!(
        scorer
            .score(Some("carol"), &spam(1), false)
            .unwrap()
            .is_none()
    );
    train_corpus(&cfg, Some("carol"), 10);
    let r = scorer
        .score(Some("carol"), &spam(1), false)
        .unwrap()
        .expect("reopened after training");
    assert!(r.probability > 0.9);
    // A correction lands without a restart too.
    let before = scorer
        .store(&model_path(dir.path(), Some("carol")))
        .unwrap()
        .nham();
    assert_eq!(
        train_message(
            &cfg.bayes_settings(),
            "carol",
            &spam(77),
            TrainClass::Ham,
            false
        )
        .unwrap(),
        TrainOutcome::Trained
    );
    let after = scorer
        .store(&model_path(dir.path(), Some("carol")))
        .unwrap()
        .nham();
    assert_eq!(after, before + 1);
}

#[test]
fn quarantine_release_correction_moves_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let m = spam(3);
    assert_eq!(
        train_message(&cfg.bayes_settings(), "dave", &m, TrainClass::Spam, false).unwrap(),
        TrainOutcome::Trained
    );
    // The copy the proxy handed out carried our X-Spam headers and CRLFs; it is still the same message.
    let mut tagged = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.9\r\n".to_vec();
    tagged.extend_from_slice(&m);
    assert_eq!(
        train_message(
            &cfg.bayes_settings(),
            "dave",
            &tagged,
            TrainClass::Ham,
            false
        )
        .unwrap(),
        TrainOutcome::Retrained
    );
    let db = TokenDb::open(&model_path(dir.path(), Some("dave"))).unwrap();
    assert_eq!((db.nspam(), db.nham()), (0, 1));
    assert_eq!(
        train_message(&cfg.bayes_settings(), "dave", &m, TrainClass::Ham, false).unwrap(),
        TrainOutcome::AlreadyTrained
    );
}

#[test]
fn config_keys_parse_and_unknown_keys_are_refused() {
    let c = Config::parse(
        "[bayes]\nengine = \"bayespam\"\nmin_spam = 50\nspam_cutoff = 0.95\nautolearn_spam = 0.999\n\
         bands = [{ name = \"BAYES_LOW\", min = 0.0, score = -2.0 }, { name = \"BAYES_HIGH\", min = 0.9, score = 4.0 }]\n",
    )
    .unwrap();
    assert_eq!(c.bayes.engine, Engine::Bayespam);
    assert_eq!(c.bayes.min_spam, 50);
    assert_eq!(c.bayes.autolearn_spam, Some(0.999));
    assert_eq!(
        c.bayes.band_for(0.95).map(|b| b.name.as_str()),
        Some("BAYES_HIGH")
    );
    assert!(Config::parse("[bayes]\nengin = \"robinson\"\n").is_err());
    assert!(Config::parse("[bayes]\nengine = \"graham\"\n").is_err());
    let d = bayes::BayesConfig::default();
    assert!(
        d.autolearn_spam.is_none() && d.autolearn_ham.is_none(),
        "auto-learn is off by default"
    );
}
