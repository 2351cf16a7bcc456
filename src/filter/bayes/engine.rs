//! The scoring engines: Robinson/Fisher chi-square combining, and the `bayespam` crate fed with our counts.

use super::BayesConfig;
use super::store::{self, TokenDb};

/// Robinson's f(w): the token's spam probability from its counts, pulled towards `x` with strength `s` while
/// evidence is thin.
fn robinson_f(c: store::Counts, nspam: u32, nham: u32, s: f64, x: f64) -> f64 {
    // Counts can exceed message totals only after untraining unrelated messages; clamp so ratios stay ≤ 1.
    let spam = f64::from(c.spam.min(nspam));
    let ham = f64::from(c.ham.min(nham));
    let sr = if nspam > 0 {
        spam / f64::from(nspam)
    } else {
        0.0
    };
    let hr = if nham > 0 { ham / f64::from(nham) } else { 0.0 };
    let p = if sr + hr > 0.0 { sr / (sr + hr) } else { x };
    let n = spam + ham;
    (s * x + n * p) / (s + n)
}

/// Maximum terms summed for one chi-square tail (convergence is geometric; this is a safety stop).
const MAX_SERIES_TERMS: usize = 20_000;

/// ln Σ exp(terms), without overflow or underflow.
fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// Both tails (P, Q) of the chi-square distribution with `dof` (even) degrees of freedom at `x2`. With m = x2/2 and
/// k = dof/2, Q = Σ_{i<k} Poisson(i; m) and P = Σ_{i≥k} Poisson(i; m); whichever is the small side is summed from its
/// own series in log space, so it keeps full precision instead of rounding to 0 (which would make messages tie).
pub(super) fn chi2_tails(x2: f64, dof: usize) -> (f64, f64) {
    let m = x2 / 2.0;
    let k = (dof / 2).max(1);
    if m <= 0.0 || !m.is_finite() {
        return if m > 0.0 { (1.0, 0.0) } else { (0.0, 1.0) };
    }
    let ln_m = m.ln();
    if m < k as f64 {
        let ln_k_fact: f64 = (2..=k).map(|i| (i as f64).ln()).sum();
        let mut t = -m + k as f64 * ln_m - ln_k_fact;
        let first = t;
        let mut terms = vec![t];
        for i in k + 1..k + MAX_SERIES_TERMS {
            t += ln_m - (i as f64).ln();
            terms.push(t);
            if t < first - 60.0 {
                break;
            }
        }
        let p = log_sum_exp(&terms).exp().min(1.0);
        (p, 1.0 - p)
    } else {
        let mut t = -m;
        let mut terms = Vec::with_capacity(k);
        terms.push(t);
        for i in 1..k {
            t += ln_m - (i as f64).ln();
            terms.push(t);
        }
        let q = log_sum_exp(&terms).exp().min(1.0);
        (1.0 - q, q)
    }
}

/// One token's contribution to a score.
#[derive(Debug, Clone, Copy)]
pub struct Clue {
    pub hash: u64,
    pub prob: f64,
}

/// Robinson/Fisher combining over the tokens found in `db`; returns the probability and the clues used.
pub fn robinson_score(db: &TokenDb, tokens: &[u64], cfg: &BayesConfig) -> (f64, Vec<Clue>) {
    let (nspam, nham) = (db.nspam(), db.nham());
    let mut clues: Vec<Clue> = Vec::with_capacity(tokens.len());
    for &t in tokens {
        let Some(c) = db.get(t) else {
            // An unseen token is exactly x, which min_deviation discards unless x itself is far from 0.5.
            if (cfg.unknown_token_prob - 0.5).abs() >= cfg.min_deviation {
                clues.push(Clue {
                    hash: t,
                    prob: cfg.unknown_token_prob,
                });
            }
            continue;
        };
        let prob = robinson_f(c, nspam, nham, cfg.robinson_s, cfg.unknown_token_prob);
        if (prob - 0.5).abs() >= cfg.min_deviation {
            clues.push(Clue { hash: t, prob });
        }
    }
    let strength = |c: &Clue| (c.prob - 0.5).abs();
    if clues.len() > cfg.max_discriminators && cfg.max_discriminators > 0 {
        clues.select_nth_unstable_by(cfg.max_discriminators - 1, |a, b| {
            strength(b)
                .total_cmp(&strength(a))
                .then(a.hash.cmp(&b.hash))
        });
        clues.truncate(cfg.max_discriminators);
    }
    if clues.is_empty() {
        return (0.5, clues);
    }
    // Fisher: H tests "the tokens are not hammy", S "not spammy"; the indicator is (1 + H - S) / 2 where both are
    // chi-square survival probabilities of -2 Σ ln(p).
    let (mut ln_h, mut ln_s) = (0.0f64, 0.0f64);
    for c in &clues {
        let p = c.prob.clamp(1e-9, 1.0 - 1e-9);
        ln_h += p.ln();
        ln_s += (1.0 - p).ln();
    }
    let dof = 2 * clues.len();
    let (p_h, q_h) = chi2_tails(-2.0 * ln_h, dof);
    let (p_s, q_s) = chi2_tails(-2.0 * ln_s, dof);
    // S = 1 - q_s ("spammy"), H = 1 - q_h ("hammy"); (S - H + 1) / 2 = (q_h + p_s) / 2 = 1 - (p_h + q_s) / 2.
    // The form built from the small quantities keeps the precision at either end.
    let low = (q_h + p_s) / 2.0;
    let prob = if low < 0.5 {
        low
    } else {
        1.0 - (p_h + q_s) / 2.0
    };
    (prob.clamp(0.0, 1.0), clues)
}

/// The `bayespam` crate's score for these tokens with the store's counts. bayespam keeps its model as a private
/// map rebuilt through serde, so the map holds just this message's tokens plus one filler entry (a key no word can
/// match) that makes its per-class totals equal the store's.
pub fn bayespam_score(db: &TokenDb, tokens: &[u64]) -> f64 {
    let mut table = serde_json::Map::with_capacity(tokens.len() + 1);
    let mut words = String::with_capacity(tokens.len() * 18);
    let (mut used_spam, mut used_ham) = (0u64, 0u64);
    for &t in tokens {
        let key = format!("t{t:016x}");
        words.push_str(&key);
        words.push(' ');
        if let Some(c) = db.get(t) {
            used_spam += u64::from(c.spam);
            used_ham += u64::from(c.ham);
            table.insert(key, serde_json::json!({"spam": c.spam, "ham": c.ham}));
        }
    }
    let filler_spam = u32::try_from(db.sum_spam().saturating_sub(used_spam)).unwrap_or(u32::MAX);
    let filler_ham = u32::try_from(db.sum_ham().saturating_sub(used_ham)).unwrap_or(u32::MAX);
    table.insert(
        " totals".into(),
        serde_json::json!({"spam": filler_spam, "ham": filler_ham}),
    );
    let model = serde_json::json!({ "token_table": table });
    match serde_json::from_value::<bayespam::classifier::Classifier>(model) {
        Ok(c) => f64::from(c.score(&words)).clamp(0.0, 1.0),
        Err(_) => 0.5,
    }
}

/// The probability bayespam's per-token rule would give (for `--explain` with that engine).
pub(super) fn graham_prob(c: store::Counts, sum_spam: u64, sum_ham: u64) -> f64 {
    if c.spam > 0 && c.ham == 0 {
        0.99
    } else if c.ham > 0 && c.spam == 0 {
        0.01
    } else if sum_spam > 0 && sum_ham > 0 {
        let h = f64::from(c.ham) / sum_ham as f64;
        let s = f64::from(c.spam) / sum_spam as f64;
        (s / (h + s)).max(0.01)
    } else {
        0.5
    }
}
