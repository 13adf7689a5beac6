//! ECS's cluster query language: `subject operator [argument]` expressions joined with
//! `and`/`&&`, `or`/`||`, `not`/`!` and parentheses, evaluated against one container instance.
//! Used by `memberOf` placement constraints and by ListContainerInstances' `filter`.
//!
//! Subjects: `agentConnected`, `agentVersion`, `attribute:<name>`, `ec2InstanceId`,
//! `registeredAt`, `runningTasksCount`, `task:group`. Operators: `==`/`equals`,
//! `!=`/`not_equals`, `>`/`greater_than`, `>=`/`greater_than_equal`, `<`/`less_than`,
//! `<=`/`less_than_equal`, `exists`, `!exists`/`not_exists`, `in`/`!in`/`not_in` with
//! `[a, b]` lists, `=~`/`matches`, `!~`/`not_matches` (regular expressions matched against the
//! whole value). Values are bare words or quoted with `'` or `"`; a bare value ends at
//! whitespace or `)`.

use std::cmp::Ordering;

use crate::Instance;

/// Longest expression ECS accepts.
pub const MAX_LEN: usize = 2000;
/// Deepest nesting of parentheses and `not`s the parser follows: it recurses once per level,
/// and a 2000-character expression of `(` would otherwise overflow a worker thread's stack.
pub const MAX_DEPTH: usize = 100;

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {pos}")]
pub struct CqlError {
    pub pos: usize,
    pub message: String,
}

#[derive(Debug, Clone)]
pub enum Subject {
    AgentConnected,
    AgentVersion,
    Attribute(String),
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        subject: Subject,
        op: CmpOp,
        values: Vec<String>,
        /// Compiled once for `=~` / `!~`.
        regex: Option<regex::Regex>,
    },
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    /// Parentheses and `not`s open around the current position.
    depth: usize,
}

fn err<T>(pos: usize, message: impl Into<String>) -> Result<T, CqlError> {
    Err(CqlError {
        pos,
        message: message.into(),
    })
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }
    /// A keyword followed by a word boundary (whitespace, a parenthesis, a list, the end).
    fn eat_word(&mut self, w: &str) -> bool {
        self.ws();
        let r = self.rest();
        // `get`: the keyword's length may end inside a multi-byte character of the input.
        if r.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(w))
            && r[w.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || "()[".contains(c))
        {
            self.pos += w.len();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, CqlError> {
        let mut left = self.and()?;
        loop {
            if self.eat("||") || self.eat_word("or") {
                let right = self.and()?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self) -> Result<Expr, CqlError> {
        let mut left = self.unary()?;
        loop {
            if self.eat("&&") || self.eat_word("and") {
                let right = self.unary()?;
                left = Expr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, CqlError> {
        self.ws();
        if self.eat("(") {
            self.deeper()?;
            let e = self.expr()?;
            self.depth -= 1;
            if !self.eat(")") {
                return err(self.pos, "expected ')'");
            }
            return Ok(e);
        }
        let not = if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            true
        } else {
            self.eat_word("not")
        };
        if not {
            self.deeper()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.comparison()
    }

    /// One more level of nesting, if the limit allows it.
    fn deeper(&mut self) -> Result<(), CqlError> {
        if self.depth == MAX_DEPTH {
            return err(
                self.pos,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            );
        }
        self.depth += 1;
        Ok(())
    }

    fn word(&mut self) -> &'a str {
        self.ws();
        let r = self.rest();
        let end = r
            .find(|c: char| c.is_whitespace() || "=!<>~()[],".contains(c))
            .unwrap_or(r.len());
        self.pos += end;
        &r[..end]
    }

    fn subject(&mut self) -> Result<Subject, CqlError> {
        let at = self.pos;
        let w = self.word();
        Ok(match w {
            "agentConnected" => Subject::AgentConnected,
            "agentVersion" => Subject::AgentVersion,
            "ec2InstanceId" => Subject::Ec2InstanceId,
            "registeredAt" => Subject::RegisteredAt,
            "runningTasksCount" => Subject::RunningTasksCount,
            "task:group" => Subject::TaskGroup,
            _ => match w.strip_prefix("attribute:") {
                Some(n) if !n.is_empty() => Subject::Attribute(n.to_string()),
                _ if w.is_empty() => return err(at, "expected a subject"),
                _ => return err(at, format!("unknown subject '{w}'")),
            },
        })
    }

    fn op(&mut self) -> Result<CmpOp, CqlError> {
        self.ws();
        let at = self.pos;
        for (sym, op) in [
            ("!exists", CmpOp::NotExists),
            ("!in", CmpOp::NotIn),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("=~", CmpOp::Matches),
            ("!~", CmpOp::NotMatches),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ] {
            if sym.starts_with('!') && sym.len() > 2 {
                if self.eat_word(sym) {
                    return Ok(op);
                }
            } else if self.eat(sym) {
                return Ok(op);
            }
        }
        for (word, op) in [
            ("equals", CmpOp::Eq),
            ("not_equals", CmpOp::Ne),
            ("greater_than_equal", CmpOp::Ge),
            ("greater_than", CmpOp::Gt),
            ("less_than_equal", CmpOp::Le),
            ("less_than", CmpOp::Lt),
            ("exists", CmpOp::Exists),
            ("not_exists", CmpOp::NotExists),
            ("in", CmpOp::In),
            ("not_in", CmpOp::NotIn),
            ("matches", CmpOp::Matches),
            ("not_matches", CmpOp::NotMatches),
        ] {
            if self.eat_word(word) {
                return Ok(op);
            }
        }
        err(at, "expected an operator")
    }

    fn value(&mut self) -> Result<String, CqlError> {
        self.ws();
        let at = self.pos;
        let r = self.rest();
        if let Some(q) = r.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let Some(end) = r[1..].find(q) else {
                return err(at, "unterminated quoted value");
            };
            self.pos += end + 2;
            return Ok(r[1..=end].to_string());
        }
        let end = r
            .find(|c: char| c.is_whitespace() || c == ')' || c == ',' || c == ']')
            .unwrap_or(r.len());
        if end == 0 {
            return err(at, "expected a value");
        }
        self.pos += end;
        Ok(r[..end].to_string())
    }

    fn comparison(&mut self) -> Result<Expr, CqlError> {
        let subject = self.subject()?;
        let op = self.op()?;
        let values = match op {
            CmpOp::Exists | CmpOp::NotExists => vec![],
            CmpOp::In | CmpOp::NotIn => {
                if !self.eat("[") {
                    return err(self.pos, "expected '[' to start a list");
                }
                let mut vals = vec![self.value()?];
                while self.eat(",") {
                    vals.push(self.value()?);
                }
                if !self.eat("]") {
                    return err(self.pos, "expected ']' to end the list");
                }
                vals
            }
            _ => vec![self.value()?],
        };
        let regex = match op {
            CmpOp::Matches | CmpOp::NotMatches => {
                let at = self.pos;
                Some(
                    regex::Regex::new(&format!("^(?:{})$", values[0]))
                        .or_else(|e| err(at, format!("invalid regular expression: {e}")))?,
                )
            }
            _ => None,
        };
        Ok(Expr::Cmp {
            subject,
            op,
            values,
            regex,
        })
    }
}

/// Compare two values: numerically when both are numbers, as versions when both look like
/// versions, else as strings.
fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    let ver = |s: &str| -> Option<Vec<u64>> {
        s.trim_start_matches('v')
            .split('.')
            .map(|p| p.parse().ok())
            .collect()
    };
    if let (Some(x), Some(y)) = (ver(a), ver(b)) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2018-06-18`, `2018-06-18T22:28:28Z`, `2018-06-18T22:28:28+00:00` → epoch seconds.
/// Every part must be in its range (years 0 to 9999), so the arithmetic cannot overflow.
pub fn parse_date(s: &str) -> Option<i64> {
    let num = |t: &str| t.parse::<i64>().ok();
    let within = |t: &str, max: i64| num(t).filter(|n| (0..=max).contains(n));
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (y, m, d) = (
        within(dp.next()?, 9999)?,
        num(dp.next()?)?,
        num(dp.next()?)?,
    );
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, o) = t.split_at(i);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':')?;
            (c, sign * (within(oh, 23)? * 3600 + within(om, 59)? * 60))
        } else {
            (t, 0)
        };
        let mut cp = clock.split(':');
        let (h, mi, se) = (
            within(cp.next()?, 23)?,
            within(cp.next()?, 59)?,
            within(cp.next()?, 60)?,
        );
        secs += h * 3600 + mi * 60 + se - offset;
    }
    Some(secs)
}

impl Expr {
    /// Parse an expression (at most [`MAX_LEN`] characters).
    pub fn parse(s: &str) -> Result<Expr, CqlError> {
        if s.len() > MAX_LEN {
            return err(MAX_LEN, "expression longer than 2000 characters");
        }
        let mut p = Parser {
            s,
            pos: 0,
            depth: 0,
        };
        let e = p.expr()?;
        p.ws();
        if p.pos != s.len() {
            return err(p.pos, format!("unexpected '{}'", p.rest()));
        }
        Ok(e)
    }

    /// Whether `inst` satisfies the expression.
    pub fn matches(&self, inst: &Instance) -> bool {
        match self {
            Expr::And(a, b) => a.matches(inst) && b.matches(inst),
            Expr::Or(a, b) => a.matches(inst) || b.matches(inst),
            Expr::Not(a) => !a.matches(inst),
            Expr::Cmp {
                subject,
                op,
                values,
                regex,
            } => {
                let actual: Vec<String> = match subject {
                    Subject::AgentConnected => vec![inst.agent_connected.to_string()],
                    Subject::AgentVersion => inst.agent_version.iter().cloned().collect(),
                    Subject::Attribute(n) => match inst.attributes.get(n) {
                        Some(v) => vec![v.clone().unwrap_or_default()],
                        None => vec![],
                    },
                    Subject::Ec2InstanceId => inst.ec2_instance_id.iter().cloned().collect(),
                    Subject::RegisteredAt => vec![inst.registered_at.to_string()],
                    Subject::RunningTasksCount => vec![inst.running_tasks_count.to_string()],
                    Subject::TaskGroup => inst
                        .task_groups
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(g, _)| g.clone())
                        .collect(),
                };
                let cmp = |a: &str, b: &str| -> Ordering {
                    if matches!(subject, Subject::RegisteredAt)
                        && let (Ok(x), Some(y)) = (a.parse::<i64>(), parse_date(b))
                    {
                        return x.cmp(&y);
                    }
                    compare(a, b)
                };
                let any = |f: &dyn Fn(&str) -> bool| actual.iter().any(|a| f(a));
                match op {
                    CmpOp::Exists => !actual.is_empty(),
                    CmpOp::NotExists => actual.is_empty(),
                    CmpOp::Eq => any(&|a| cmp(a, &values[0]) == Ordering::Equal),
                    CmpOp::Ne => !any(&|a| cmp(a, &values[0]) == Ordering::Equal),
                    CmpOp::Gt => any(&|a| cmp(a, &values[0]) == Ordering::Greater),
                    CmpOp::Ge => any(&|a| cmp(a, &values[0]) != Ordering::Less),
                    CmpOp::Lt => any(&|a| cmp(a, &values[0]) == Ordering::Less),
                    CmpOp::Le => any(&|a| cmp(a, &values[0]) != Ordering::Greater),
                    CmpOp::In => any(&|a| values.iter().any(|v| cmp(a, v) == Ordering::Equal)),
                    CmpOp::NotIn => !any(&|a| values.iter().any(|v| cmp(a, v) == Ordering::Equal)),
                    CmpOp::Matches => regex.as_ref().is_some_and(|r| any(&|a| r.is_match(a))),
                    CmpOp::NotMatches => !regex.as_ref().is_some_and(|r| any(&|a| r.is_match(a))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instance {
        let mut i = Instance {
            arn: "arn".into(),
            id: "i1".into(),
            status: "ACTIVE".into(),
            agent_connected: true,
            agent_version: Some("1.14.5".into()),
            registered_at: parse_date("2018-06-18T22:28:28Z").unwrap(),
            ec2_instance_id: Some("i-abc".into()),
            cpu: 1024,
            memory: 2048,
            running_tasks_count: 1,
            ..Default::default()
        };
        std::sync::Arc::make_mut(&mut i.attributes)
            .insert("ecs.instance-type".into(), Some("t2.micro".into()));
        std::sync::Arc::make_mut(&mut i.attributes)
            .insert("ecs.availability-zone".into(), Some("us-east-1a".into()));
        std::sync::Arc::make_mut(&mut i.attributes).insert("flag".into(), None);
        i.task_groups.insert("service:production".into(), 1);
        i
    }

    fn m(e: &str) -> bool {
        Expr::parse(e)
            .unwrap_or_else(|x| panic!("{e}: {x}"))
            .matches(&inst())
    }

    #[test]
    fn operators() {
        assert!(m("attribute:ecs.instance-type == t2.micro"));
        assert!(m("attribute:ecs.instance-type equals t2.micro"));
        assert!(!m("attribute:ecs.instance-type != t2.micro"));
        assert!(m("attribute:ecs.instance-type =~ t2.*"));
        assert!(!m("attribute:ecs.instance-type =~ t2"), "whole-value match");
        assert!(m("attribute:ecs.instance-type !~ m5.*"));
        assert!(m(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"
        ));
        assert!(m("attribute:ecs.availability-zone not_in [us-east-1c]"));
        assert!(!m("attribute:ecs.availability-zone !in [us-east-1a]"));
        assert!(m("attribute:flag exists"));
        assert!(m("attribute:nope !exists"));
        assert!(m("attribute:nope not_exists"));
        assert!(!m("attribute:nope == x"));
        assert!(m("runningTasksCount == 1"));
        assert!(m("runningTasksCount < 2") && m("runningTasksCount >= 1"));
        assert!(m("runningTasksCount greater_than 0"));
        assert!(
            m("agentVersion < 1.14.10"),
            "version order, not string order"
        );
        assert!(m("agentVersion >= 1.14.5"));
        assert!(m("agentConnected == true"));
        assert!(m("ec2InstanceId == i-abc"));
        assert!(m("registeredAt < 2018-06-19"));
        assert!(m("registeredAt > 2018-06-18T22:00:00+00:00"));
        assert!(m("registeredAt == '2018-06-18T22:28:28+00:00'"));
        assert!(m("task:group == service:production"));
        assert!(!m("not(task:group == service:production)"));
        assert!(m("!(task:group == database)"));
    }

    #[test]
    fn compound() {
        assert!(m(
            "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone in [us-east-1a]"
        ));
        assert!(m("runningTasksCount == 9 || runningTasksCount == 1"));
        assert!(!m("runningTasksCount == 9 && runningTasksCount == 1"));
        assert!(m(
            "(runningTasksCount == 9 or runningTasksCount == 1) and agentConnected == true"
        ));
        assert!(m("not runningTasksCount == 9"));
        // A unary operator right before a closing parenthesis.
        assert!(m("(attribute:flag exists)"));
        assert!(m(
            "(attribute:nope !exists) and (attribute:flag not_exists or agentConnected == true)"
        ));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "attribute:x ==",
            "attribute:x",
            "bogus == 1",
            "attribute:x in [a, b",
            "(attribute:x == 1",
            "attribute:x == 1 extra",
            "attribute:x =~ (",
            "attribute:x == 'open",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Expr::parse(&"a".repeat(2001)).is_err());
        // Found by afl (bench/fuzz.sh cql): a multi-byte character where a keyword or an
        // operator word might be sliced the input inside that character and panicked.
        for bad in [
            "attribute:x =\u{80}0 large.*",
            "a\u{2000}triBrge == 1",
            "attribute:x == 1 a\u{e9}d attribute:y == 2",
            "n\u{f6}t attribute:x exists",
            "attribute:x e\u{1f600}sts",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(m("attribute:ecs.instance-type != \u{e9}t\u{e9}"));
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2018-06-18T22:28:28Z"), Some(1_529_360_908));
        assert_eq!(parse_date("2018-06-18T23:28:28+01:00"), Some(1_529_360_908));
        assert_eq!(parse_date("2018-13-01"), None);
        assert_eq!(parse_date("9999-12-31"), Some(253_402_214_400));
        // Found while writing the fuzz targets (a file in fuzz/crashes/ replays it): parts this
        // large overflowed the arithmetic (a panic in debug builds, a wrapped date in release
        // ones). They are not dates.
        for bad in [
            "9223372036854775807-01-01",
            "10000-01-01",
            "2018-01-01T9223372036854775807:00:00Z",
            "2018-01-01T00:00:00+9223372036854775807:00",
            "2018-01-01T24:00:00Z",
            "2018-01-01T-1:00:00Z",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert!(!m("registeredAt > 9223372036854775807-01-01"));
    }

    /// Found while writing the fuzz targets (a file in fuzz/crashes/ replays it): 1000 `(` (or `!`)
    /// made the parser recurse until the stack overflowed (an abort of the whole server). Nesting
    /// is refused past MAX_DEPTH, with the position.
    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        for (open, close) in [("(", ")"), ("!", ""), ("not ", "")] {
            let deep = format!(
                "{}agentConnected exists{}",
                open.repeat(990.min(1990 / open.len())),
                close.repeat(990)
            );
            let deep = &deep[..deep.len().min(MAX_LEN)];
            let e = Expr::parse(deep).unwrap_err();
            assert!(e.message.contains("nests deeper"), "{e}");
            let ok = format!(
                "{}agentConnected exists{}",
                open.repeat(MAX_DEPTH),
                close.repeat(MAX_DEPTH)
            );
            // MAX_DEPTH is even: as many `not`s as parentheses leave the comparison true.
            assert!(Expr::parse(&ok).unwrap().matches(&inst()), "{open}");
        }
    }
}
