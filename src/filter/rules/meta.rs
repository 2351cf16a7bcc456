//! Meta-rule expressions: boolean and counting combinations of other rules' hits.
//!
//! Grammar (a rule name is 1 when it hit, else 0; any non-zero value is true):
//! ```text
//! or   := and ( "||" and )*
//! and  := cmp ( "&&" cmp )*
//! cmp  := sum ( ( ">=" | "<=" | ">" | "<" | "==" | "!=" ) sum )?
//! sum  := unary ( "+" unary )*
//! unary:= "!" unary | NAME | NUMBER | "(" or ")"
//! ```
//! e.g. `__HTML_ONLY && (BODY_REMOVE + BODY_CLICK_HERE + SUBJ_MONEY >= 2)`.

/// Nesting depth accepted in an expression; keeps the recursive parser's stack bounded on hostile files.
pub const MAX_EXPR_DEPTH: usize = 32;
/// Longest expression accepted (bytes).
pub const MAX_EXPR_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Rule(usize),
    Num(i64),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Sum(Vec<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

impl Expr {
    /// Value of the expression given which rules hit.
    pub fn eval(&self, hit: &[bool]) -> i64 {
        match self {
            Expr::Rule(i) => i64::from(hit.get(*i).copied().unwrap_or(false)),
            Expr::Num(n) => *n,
            Expr::Not(e) => i64::from(e.eval(hit) == 0),
            Expr::And(es) => i64::from(es.iter().all(|e| e.eval(hit) != 0)),
            Expr::Or(es) => i64::from(es.iter().any(|e| e.eval(hit) != 0)),
            Expr::Sum(es) => es
                .iter()
                .fold(0i64, |acc, e| acc.saturating_add(e.eval(hit))),
            Expr::Cmp(a, op, b) => {
                let (a, b) = (a.eval(hit), b.eval(hit));
                i64::from(match op {
                    CmpOp::Ge => a >= b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Lt => a < b,
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                })
            }
        }
    }

    /// Every rule index the expression reads.
    pub fn rules(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Rule(i) => out.push(*i),
            Expr::Num(_) => {}
            Expr::Not(e) => e.rules(out),
            Expr::And(es) | Expr::Or(es) | Expr::Sum(es) => es.iter().for_each(|e| e.rules(out)),
            Expr::Cmp(a, _, b) => {
                a.rules(out);
                b.rules(out);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Num(i64),
    Not,
    And,
    Or,
    Plus,
    Open,
    Close,
    Cmp(CmpOp),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two = b.get(i..i + 2).unwrap_or(&[]);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::Open, 1),
            b')' => (Tok::Close, 1),
            b'+' => (Tok::Plus, 1),
            _ if two == b"&&" => (Tok::And, 2),
            _ if two == b"||" => (Tok::Or, 2),
            _ if two == b">=" => (Tok::Cmp(CmpOp::Ge), 2),
            _ if two == b"<=" => (Tok::Cmp(CmpOp::Le), 2),
            _ if two == b"==" => (Tok::Cmp(CmpOp::Eq), 2),
            _ if two == b"!=" => (Tok::Cmp(CmpOp::Ne), 2),
            b'>' => (Tok::Cmp(CmpOp::Gt), 1),
            b'<' => (Tok::Cmp(CmpOp::Lt), 1),
            b'!' => (Tok::Not, 1),
            b'0'..=b'9' => {
                let len = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let n = s[i..i + len]
                    .parse()
                    .map_err(|_| format!("number {} is too large", &s[i..i + len]))?;
                (Tok::Num(n), len)
            }
            _ if c == b'_' || c.is_ascii_alphabetic() => {
                let len = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (Tok::Name(s[i..i + len].to_owned()), len)
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected {ch:?} at column {}", i + 1));
            }
        };
        toks.push(tok);
        i += len;
    }
    Ok(toks)
}

struct Parser<'a, F> {
    toks: Vec<Tok>,
    pos: usize,
    resolve: &'a mut F,
}

impl<F: FnMut(&str) -> Result<usize, String>> Parser<'_, F> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_EXPR_DEPTH {
            return Err(format!("nested deeper than {MAX_EXPR_DEPTH} levels"));
        }
        let mut items = vec![self.and(depth)?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut items = vec![self.cmp(depth)?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            items.push(self.cmp(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn cmp(&mut self, depth: usize) -> Result<Expr, String> {
        let left = self.sum(depth)?;
        if let Some(Tok::Cmp(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            let right = self.sum(depth)?;
            return Ok(Expr::Cmp(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn sum(&mut self, depth: usize) -> Result<Expr, String> {
        let mut items = vec![self.unary(depth)?];
        while self.peek() == Some(&Tok::Plus) {
            self.pos += 1;
            items.push(self.unary(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Sum(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_EXPR_DEPTH {
            return Err(format!("nested deeper than {MAX_EXPR_DEPTH} levels"));
        }
        let tok = self.peek().cloned();
        self.pos += 1;
        match tok {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary(depth + 1)?))),
            Some(Tok::Name(n)) => Ok(Expr::Rule((self.resolve)(&n)?)),
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Open) => {
                let e = self.or(depth + 1)?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("missing ')'".into());
                }
                self.pos += 1;
                Ok(e)
            }
            Some(t) => Err(format!(
                "unexpected {t:?}; expected a rule name, number, '!' or '('"
            )),
            None => Err("expression ends too early".into()),
        }
    }
}

/// Parses `text`, turning each rule name into an index with `resolve` (which reports unknown names).
pub fn parse(
    text: &str,
    resolve: &mut impl FnMut(&str) -> Result<usize, String>,
) -> Result<Expr, String> {
    if text.len() > MAX_EXPR_LEN {
        return Err(format!("expression longer than {MAX_EXPR_LEN} bytes"));
    }
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err("expression is empty".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        resolve,
    };
    let e = p.or(0)?;
    if p.pos != p.toks.len() {
        return Err(format!(
            "unexpected {:?} after a complete expression",
            p.toks[p.pos]
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, hits: &[(&str, bool)]) -> Result<i64, String> {
        let names: Vec<&str> = hits.iter().map(|(n, _)| *n).collect();
        let bits: Vec<bool> = hits.iter().map(|(_, b)| *b).collect();
        let e = parse(text, &mut |n| {
            names
                .iter()
                .position(|x| *x == n)
                .ok_or(format!("unknown rule {n}"))
        })?;
        Ok(e.eval(&bits))
    }

    #[test]
    fn boolean_logic_and_precedence() {
        let h = [("A", true), ("B", false), ("C", true)];
        assert_eq!(eval("A && B || C", &h), Ok(1));
        assert_eq!(eval("A && (B || !C)", &h), Ok(0));
        assert_eq!(eval("!B", &h), Ok(1));
        assert_eq!(eval("!!A", &h), Ok(1));
    }

    #[test]
    fn counting() {
        let h = [("A", true), ("B", false), ("C", true)];
        assert_eq!(eval("A + B + C >= 2", &h), Ok(1));
        assert_eq!(eval("A + B + C > 2", &h), Ok(0));
        assert_eq!(eval("A + B + C == 2 && !B", &h), Ok(1));
        assert_eq!(eval("(A + C) != 2", &h), Ok(0));
    }

    #[test]
    fn errors() {
        let h = [("A", true)];
        assert!(eval("A &&", &h).unwrap_err().contains("ends too early"));
        assert!(eval("A B", &h).unwrap_err().contains("after a complete"));
        assert!(eval("(A", &h).unwrap_err().contains("')'"));
        assert!(eval("NOPE", &h).unwrap_err().contains("unknown rule NOPE"));
        assert!(eval("A & A", &h).unwrap_err().contains("unexpected"));
        assert!(eval("", &h).unwrap_err().contains("empty"));
        let deep = format!("{}A{}", "(".repeat(100), ")".repeat(100));
        assert!(eval(&deep, &h).unwrap_err().contains("nested"));
        let nots = format!("{}A", "!".repeat(100));
        assert!(eval(&nots, &h).unwrap_err().contains("nested"));
    }
}
