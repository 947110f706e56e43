//! GSM8K-layout math word problems: varied templates, multi-step arithmetic, worked solutions
//! with calculator annotations (`<<3*4=12>>`) ending in `#### N`, generated from a seed. The
//! train and test splits come from disjoint random streams, so they never share a problem.

use crate::files::File;
use crate::rng::SplitMix64;
use crate::train::data::Regime;

/// One problem in the GSM8K layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub question: String,
    /// Worked solution ending in `#### N`.
    pub answer: String,
}

const NAMES: &[(&str, &str)] = &[
    ("Anna", "she"),
    ("Ben", "he"),
    ("Chloe", "she"),
    ("David", "he"),
    ("Emma", "she"),
    ("Farid", "he"),
    ("Grace", "she"),
    ("Hugo", "he"),
    ("Ines", "she"),
    ("Jonas", "he"),
    ("Keiko", "she"),
    ("Liam", "he"),
    ("Maya", "she"),
    ("Noah", "he"),
    ("Olga", "she"),
    ("Pedro", "he"),
    ("Rosa", "she"),
    ("Sam", "he"),
    ("Tara", "she"),
    ("Victor", "he"),
];
const ITEMS: &[&str] = &[
    "apples", "books", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards",
    "eggs", "flowers", "coins",
];

struct Gen<'a>(&'a mut SplitMix64);

impl Gen<'_> {
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.0.next_u64() % (hi - lo + 1) as u64) as i64
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.0.next_u64() % v.len() as u64) as usize]
    }
    fn person(&mut self) -> (&'static str, &'static str) {
        self.pick(NAMES)
    }
    fn two_people(&mut self) -> ((&'static str, &'static str), (&'static str, &'static str)) {
        let a = self.person();
        loop {
            let b = self.person();
            if b.0 != a.0 {
                return (a, b);
            }
        }
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A step `a op b = r` with its calculator annotation.
fn calc(a: i64, op: char, b: i64) -> (i64, String) {
    let r = match op {
        '+' => a + b,
        '-' => a - b,
        '*' => a * b,
        _ => a / b,
    };
    (r, format!("{a} {op} {b} = <<{a}{op}{b}={r}>>{r}"))
}

fn problem(g: &mut Gen) -> Problem {
    match g.int(0, 7) {
        0 => {
            let ((n, p), (m, _)) = g.two_people();
            let item = g.pick(ITEMS);
            let (a, b) = (g.int(5, 60), g.int(2, 40));
            let c = g.int(1, a + b - 1);
            let (s, s1) = calc(a, '+', b);
            let (r, s2) = calc(s, '-', c);
            Problem {
                question: format!(
                    "{n} has {a} {item}. {} buys {b} more and then gives {c} to {m}. How many {item} does {n} have now?",
                    cap(p)
                ),
                answer: format!(
                    "After buying, {n} has {s1} {item}.\nAfter giving some away, {p} has {s2} {item}.\n#### {r}"
                ),
            }
        }
        1 => {
            let (n, _) = g.person();
            let item = g.pick(ITEMS);
            let (boxes, per, extra) = (g.int(2, 12), g.int(3, 15), g.int(1, 20));
            let (t, s1) = calc(boxes, '*', per);
            let (r, s2) = calc(t, '+', extra);
            Problem {
                question: format!(
                    "{n} has {boxes} boxes with {per} {item} in each box, and {extra} loose {item}. How many {item} does {n} have in total?"
                ),
                answer: format!(
                    "The boxes hold {s1} {item}.\nWith the loose ones that makes {s2} {item}.\n#### {r}"
                ),
            }
        }
        2 => {
            let (n, p) = g.person();
            let (price, qty, paid_extra) = (g.int(2, 25), g.int(2, 9), g.int(1, 30));
            let (cost, s1) = calc(price, '*', qty);
            let paid = cost + paid_extra;
            let (r, s2) = calc(paid, '-', cost);
            Problem {
                question: format!(
                    "A notebook costs ${price}. {n} buys {qty} notebooks and pays with ${paid}. How much change does {p} get?"
                ),
                answer: format!(
                    "The notebooks cost {s1} dollars.\nThe change is {s2} dollars.\n#### {r}"
                ),
            }
        }
        3 => {
            let (n, _) = g.person();
            let (speed, hours, hours2) = (g.int(20, 90), g.int(2, 6), g.int(1, 4));
            let (d1, s1) = calc(speed, '*', hours);
            let (d2, s2) = calc(speed, '*', hours2);
            let (r, s3) = calc(d1, '+', d2);
            Problem {
                question: format!(
                    "{n} drives at {speed} km per hour for {hours} hours, rests, and then drives {hours2} more hours at the same speed. How many kilometers does {n} drive in total?"
                ),
                answer: format!(
                    "First {n} drives {s1} km.\nThen {s2} km.\nIn total {s3} km.\n#### {r}"
                ),
            }
        }
        4 => {
            let ((n, _), (m, _)) = g.two_people();
            let item = g.pick(ITEMS);
            let share = g.int(3, 20);
            let people = g.int(2, 8);
            let total = share * people;
            let (r, s1) = calc(total, '/', people);
            let (r2, s2) = calc(r, '*', 2);
            Problem {
                question: format!(
                    "{n} shares {total} {item} equally among {people} friends. {m} is one of the friends and doubles the {item} {m} receives by buying more. How many {item} does {m} have now?"
                ),
                answer: format!(
                    "Each friend gets {s1} {item}.\n{m} then has {s2} {item}.\n#### {r2}"
                ),
            }
        }
        5 => {
            let (n, p) = g.person();
            // Multiples of 20 keep every discount a whole number of dollars.
            let price = g.int(1, 20) * 20;
            let pct = g.pick(&[10i64, 20, 25, 50]);
            let off = price * pct / 100;
            let (r, s2) = calc(price, '-', off);
            Problem {
                question: format!(
                    "A jacket costs ${price}. It is on sale for {pct}% off. How much does {n} pay if {p} buys it on sale?"
                ),
                answer: format!(
                    "The discount is {price} * {pct} / 100 = <<{price}*{pct}/100={off}>>{off} dollars.\nSo {n} pays {s2} dollars.\n#### {r}"
                ),
            }
        }
        6 => {
            let (n, _) = g.person();
            let (weeks, per_week, spent) = (g.int(3, 12), g.int(5, 30), g.int(5, 40));
            let (saved, s1) = calc(weeks, '*', per_week);
            let spent = spent.min(saved - 1);
            let (r, s2) = calc(saved, '-', spent);
            Problem {
                question: format!(
                    "{n} saves ${per_week} every week for {weeks} weeks and then spends ${spent} on a gift. How much money does {n} have left?"
                ),
                answer: format!(
                    "{n} saves {s1} dollars.\nAfter the gift {n} has {s2} dollars.\n#### {r}"
                ),
            }
        }
        _ => {
            let item = g.pick(ITEMS);
            let (rows, cols, broken) = (g.int(3, 12), g.int(3, 12), g.int(1, 9));
            let (t, s1) = calc(rows, '*', cols);
            let broken = broken.min(t - 1);
            let (r, s2) = calc(t, '-', broken);
            Problem {
                question: format!(
                    "A shop puts {item} in {rows} rows of {cols}. Then {broken} of them are sold. How many {item} are left in the rows?"
                ),
                answer: format!(
                    "There are {s1} {item} at first.\nAfter the sale {s2} are left.\n#### {r}"
                ),
            }
        }
    }
}

/// `n` problems from stream `seed`; the same seed always gives the same problems.
pub fn generate(n: usize, seed: u64) -> Vec<Problem> {
    let mut rng = SplitMix64(seed);
    let mut g = Gen(&mut rng);
    (0..n).map(|_| problem(&mut g)).collect()
}

/// Train and test splits from disjoint streams of one seed, without duplicate questions.
pub fn splits(train: usize, test: usize, seed: u64) -> (Vec<Problem>, Vec<Problem>) {
    let test_set = generate(test, seed ^ 0x5EED_7E57);
    let seen: std::collections::HashSet<&str> =
        test_set.iter().map(|p| p.question.as_str()).collect();
    let mut out = Vec::with_capacity(train);
    let mut stream = seed;
    while out.len() < train {
        for p in generate(train - out.len(), stream) {
            if !seen.contains(p.question.as_str()) {
                out.push(p);
            }
        }
        stream = stream.wrapping_add(1);
    }
    (out, test_set)
}

/// JSON lines of problems in the GSM8K layout.
pub fn jsonl(problems: &[Problem]) -> Vec<u8> {
    File::jsonl("", problems).bytes
}

/// Training lines for problems: GSM8K-layout JSONL for instruction tuning, or
/// `{"text": "Question: …\nAnswer: …"}` documents for continued pretraining.
pub fn training_lines(problems: &[Problem], regime: Regime) -> Vec<u8> {
    match regime {
        Regime::Ift => jsonl(problems),
        Regime::Cpt => problems
            .iter()
            .map(|p| {
                serde_json::json!({"text": format!("Question: {}\nAnswer: {}", p.question, p.answer)})
                    .to_string()
                    + "\n"
            })
            .collect::<String>()
            .into_bytes(),
    }
}

/// The files of a generated dataset: `train.jsonl` and `test.jsonl` (GSM8K layout, also usable
/// for instruction tuning) and `train.txt` (the continued-pretraining form).
pub fn files(train: &[Problem], test: &[Problem]) -> Vec<File> {
    let text: String = train
        .iter()
        .map(|p| format!("Question: {}\nAnswer: {}\n\n", p.question, p.answer))
        .collect();
    vec![
        File::new("train.jsonl", jsonl(train)),
        File::new("test.jsonl", jsonl(test)),
        File::new("train.txt", text),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `<<a op b = r>>` annotation must be correct, and the last result is the answer.
    fn check(p: &Problem) {
        let re = regex::Regex::new(r"<<(-?\d+)([-+*/])(-?\d+)(?:/100)?=(-?\d+)>>").unwrap();
        for c in re.captures_iter(&p.answer) {
            let (a, b, r): (i64, i64, i64) = (
                c[1].parse().unwrap(),
                c[3].parse().unwrap(),
                c[4].parse().unwrap(),
            );
            let full = c.get(0).unwrap().as_str();
            let v = match &c[2] {
                "+" => a + b,
                "-" => a - b,
                "*" if full.contains("/100") => a * b / 100,
                "*" => a * b,
                _ => {
                    assert_eq!(a % b, 0, "{full}: inexact division");
                    a / b
                }
            };
            assert_eq!(v, r, "{full} in {}", p.answer);
            assert!(r >= 0, "negative intermediate in {}", p.answer);
        }
        let last = p.answer.rsplit("#### ").next().unwrap();
        assert!(last.parse::<i64>().unwrap() >= 0);
    }

    #[test]
    fn problems_are_correct_varied_and_reproducible() {
        let (train, test) = splits(400, 100, 7);
        assert_eq!(train.len(), 400);
        for p in train.iter().chain(&test) {
            check(p);
            assert!(p.answer.contains("\n#### "));
        }
        assert_eq!(splits(400, 100, 7), (train.clone(), test.clone()));
        let test_q: std::collections::HashSet<_> = test.iter().map(|p| &p.question).collect();
        assert!(
            train.iter().all(|p| !test_q.contains(&p.question)),
            "splits overlap"
        );
        let distinct: std::collections::HashSet<_> = train
            .iter()
            .map(|p| p.question.split(' ').nth(2).unwrap_or(""))
            .collect();
        assert!(distinct.len() > 10, "templates vary");
        // The strict GSM8K filter reads the answer back.
        for p in &test {
            let gold = crate::eval::gsm8k::normalize(&p.answer);
            assert_eq!(
                crate::eval::gsm8k::normalize(&crate::eval::gsm8k::strict(&p.answer)),
                gold
            );
        }
    }
}
