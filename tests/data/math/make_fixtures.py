"""Writes the math-task fixtures of this folder (run from anywhere: ``python make_fixtures.py``).

Each file holds ~20 made-up problems in one dataset layout, with a few malformed records at
fixed positions that the tests name by line / item / row. The problems are our own.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of "
    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'

# (question, worked answer ending in "#### n"): GSM8K layout
GSM8K = [
    ("Ann has 3 boxes of 12 pens. How many pens does she have?", "3*12 = 36\n#### 36"),
    ("A bike costs $1,200 and a helmet $45. What do both cost?", "1200+45=1245\n#### 1,245"),
    ("Tom reads 15 pages a day for 8 days. How many pages?", "15*8=120\n#### 120"),
    ("A farm has 1,000 hens; 250 are sold. How many are left?", "1000-250=750\n#### 750"),
    ("Half of 18 apples are eaten. How many remain?", "18/2=9\n#### 9"),
    ("It is 5 degrees and drops 8 degrees. What is it now?", "5-8=-3\n#### -3"),
    ("Six friends share 2,400 dollars equally. How much each?", "2400/6=400\n#### 400"),
    ("A train goes 60 km/h for 2.5 hours. How far?", "60*2.5=150\n#### 150"),
    ("Sam buys 4 shirts at 7 dollars. How much does he pay?", "4*7=28\n#### 28"),
    ("A class of 30 has 12 boys. How many girls?", "30-12=18\n#### 18"),
    ("How many minutes are in 3 hours?", "3*60=180\n#### 180"),
    ("Eggs come in dozens. How many eggs are in 7 dozen?", "7*12=84\n#### 84"),
    ("A pool holds 12,500 liters and is 40% full. How many liters?", "0.4*12500\n#### 5,000"),
    ("Lia saves 15 dollars a week for 10 weeks. Total?", "15*10=150\n#### 150"),
    ("What is 1/4 of 1,000,000?", "250000\n#### 250,000"),
]


def gsm8k_lines() -> list[str]:
    lines = [json.dumps({"question": q, "answer": a}) for q, a in GSM8K]
    # malformed at 1-based lines 4, 8, 12, 16, 19; line 20 is blank (see tests/test_math_task.py)
    lines.insert(3, '{"question": "How many legs do 3 cats have?", "answer": "12 #### ')  # bad JSON
    lines.insert(7, json.dumps({"question": "What is 2+2?"}))  # missing answer
    lines.insert(11, json.dumps({"question": "What is 9-4?", "answer": "9-4 = 5"}))  # no ####
    lines.insert(15, json.dumps({"question": ["What is 3*3?"], "answer": "#### 9"}))  # wrong type
    lines.insert(18, "")  # blank line: not a record
    lines.insert(18, json.dumps([1, 2, 3]))  # not an object
    return lines


# (problem, solution with the answer in \boxed{} / \fbox{}): MATH layout
MATH = [
    ("Compute $\\frac{1}{4}+\\frac{1}{4}$.", "We add: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."),
    ("Solve $2x+3=9$.", "$2x=6$, so $x=\\boxed{3}$."),
    ("What is $\\sqrt{50}$ in simplest form?", "$\\sqrt{25\\cdot 2}=\\boxed{5\\sqrt{2}}$."),
    ("Find the set of roots of $x^2-3x+2$.", "It factors: the roots are $\\boxed{\\{1,2\\}}$."),
    ("What is $2^{10}$?", "$2^{10}=\\boxed{1024}$."),
    ("Simplify $\\frac{6}{8}$.", "First $\\boxed{\\frac{6}{8}}$, simpler: $\\boxed{\\frac34}$."),
    ("Evaluate $\\dfrac{3}{5}\\cdot 10$.", "$\\fbox{6}$"),
    ("What is $-7+2$?", "$-7+2 = \\boxed{-5}$"),
    ("Write $0.75$ as a percent.", "$\\boxed{75\\%}$"),
    ("What is the interval where $x^2<1$?", "$\\boxed{(-1,1)}$"),
    ("What is $\\pi$ to two decimals?", "It is $\\boxed{3.14}$."),
    ("Expand $(x+1)^2$.", "$\\boxed{x^2+2x+1}$"),
    ("What is $10-\\frac{1}{2}$?", "$\\boxed{\\frac{19}{2}}$"),
    ("What is $6\\cdot 7$?", "The answer is $\\boxed 42$."),
]


def math_lines() -> list[str]:
    lines = [
        json.dumps({"problem": p, "solution": s, "level": "Level 1", "type": "Algebra"})
        for p, s in MATH
    ]
    lines.append(json.dumps({"problem": "What is 8/2?", "solution": "4", "answer": "4"}))
    # malformed at 1-based lines 3, 9, 14, 18 (see tests/test_math_task.py)
    lines.insert(2, json.dumps({"problem": "What is 1+1?", "solution": "It is 2."}))  # no box
    lines.insert(8, json.dumps({"problem": "What is 5*5?"}))  # missing solution
    lines.insert(13, '{"problem": "What is 3+4?", "solution": "\\boxed{7}"')  # bad JSON
    lines.insert(17, json.dumps({"problem": "", "solution": "$\\boxed{1}$"}))  # empty problem
    return lines


# AIME-style JSON: {"data": [{"id", "problem", "answer": int}]}; malformed items 2 and 5
AIME = [
    ("How many positive divisors does 36 have?", 9),
    ("What is the remainder when 2^10 is divided by 7?", 2),
    ("What is the sum of the first 20 positive integers?", 210),
    ("How many 3-digit multiples of 25 are there?", 36),
    ("What is 13*17?", 221),
    ("What is the number of subsets of a 5-element set?", 32),
]


def aime_json() -> str:
    items = [{"id": i, "problem": p, "answer": a} for i, (p, a) in enumerate(AIME)]
    items.insert(2, {"id": 90, "problem": "What is 2+3?", "answer": True})  # wrong type
    items.insert(5, {"id": 91, "problem": "What is 7-7?", "answer": None})  # missing
    return json.dumps({"data": items}, indent=1)


# DAPO-Math-17k layout: chat-message prompt with DAPO's wrapper, reward_model.ground_truth
DAPO = [
    ("Let $a+b=10$ and $a-b=4$. Find $ab$.", "21"),
    ("How many primes are less than 30?", "10"),
    ("Find the largest integer $n$ with $n^2<200$.", "14"),
    ("What is the sum of the interior angles of a hexagon, in degrees?", "720"),
    ("If $3^k=81$, what is $k$?", "4"),
    ("A fair die is rolled twice. In how many outcomes is the sum 7?", "6"),
    ("What is $\\binom{6}{2}$?", "15"),
    ("Find the last digit of $7^{100}$.", "1"),
    ("What is the least common multiple of 12 and 18?", "36"),
    ("How many diagonals does a decagon have?", "35"),
    ("What is $1+2+\\cdots+100$?", "5050"),
    ("Find $x$ if $\\log_2 x = 5$.", "32"),
    ("What is the area of a right triangle with legs 6 and 8?", "24"),
    ("How many zeros end $25!$?", "6"),
    ("What is $99^2$?", "9801"),
    ("Find the greatest common divisor of 84 and 126.", "42"),
]


def dapo_rows() -> list[dict]:
    def row(index: int, question: str, truth: str | None, role: str = "user") -> dict:
        content = DAPO_PREFIX + question + DAPO_SUFFIX
        return {
            "data_source": "math_dapo",
            "prompt": [{"content": content, "role": role}],
            "ability": "MATH",
            "reward_model": {"ground_truth": truth, "style": "rule-lean"},
            "extra_info": {"index": f"fixture-{index}"},
        }

    rows = [row(i, q, a) for i, (q, a) in enumerate(DAPO)]
    # malformed at 0-based rows 3, 7, 11 (see tests/test_math_task.py)
    rows.insert(3, row(100, "What is 4*4?", ""))  # empty ground truth
    rows.insert(7, row(101, "What is 5+6?", "11", role="system"))  # no user message
    rows.insert(11, row(102, "What is 10/5?", None))  # null ground truth, no fallback field
    return rows


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (HERE / "gsm8k.jsonl").write_text("\n".join(gsm8k_lines()) + "\n")
    (HERE / "math.jsonl").write_text("\n".join(math_lines()) + "\n")
    (HERE / "aime.json").write_text(aime_json() + "\n")
    pq.write_table(pa.Table.from_pylist(dapo_rows()), HERE / "dapo.parquet")


if __name__ == "__main__":
    main()
