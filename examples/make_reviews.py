"""Generate the small English review-sentiment dataset that ships with headstart (examples/data/).

Sentences are composed from hand-written fragments (subjects, opinions, details) with a fixed seed,
so the quick-start job has real text to fine-tune on without any download. Re-running this script
reproduces the committed CSV files byte for byte.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SUBJECTS = [
    "the battery", "this blender", "the customer service", "the hotel room", "the plot", "the soundtrack",
    "the delivery", "this jacket", "the screen", "the coffee maker", "the app", "the camera", "the staff",
    "the ending", "the keyboard", "the mattress", "this novel", "the headphones", "the restaurant", "the update",
    "the acting", "the packaging", "the charger", "the tour guide", "the shoes", "the price", "the recipe",
    "the vacuum cleaner", "the movie", "the checkout process",
]
POSITIVE = [
    "works perfectly", "exceeded my expectations", "is absolutely wonderful", "made my day", "is worth every penny",
    "is a real delight", "feels sturdy and well made", "was friendly and helpful", "is beautifully done",
    "impressed the whole family", "is fast and reliable", "is a joy to use", "turned out great",
    "was a pleasant surprise", "deserves five stars", "is brilliant", "keeps getting better", "is excellent",
]
NEGATIVE = [
    "stopped working after a week", "was a complete waste of money", "is painfully slow", "broke on the first day",
    "was rude and unhelpful", "is badly designed", "fell apart quickly", "was a huge disappointment",
    "is overpriced junk", "made everything worse", "is flimsy and cheap", "never arrived on time", "is awful",
    "left me frustrated", "is boring from start to finish", "does not work at all", "is a total mess",
    "smelled terrible",
]
POS_TAIL = [
    "", "", "I would buy it again.", "Highly recommended.", "My friends loved it too.", "Great value.",
    "I am very happy with it.", "Ten out of ten.", "Will definitely come back.",
]
NEG_TAIL = [
    "", "", "I want a refund.", "Avoid it.", "Never again.", "I regret buying it.", "Do not recommend.",
    "Very disappointing.", "I returned it.",
]
OPENERS = ["", "", "Honestly, ", "To be fair, ", "Overall, ", "I have to say ", "After a month, ", "Sadly, "]


def make_row(rng: random.Random, label: int) -> str:
    opinion = rng.choice(POSITIVE if label else NEGATIVE)
    tail = rng.choice(POS_TAIL if label else NEG_TAIL)
    opener = rng.choice([o for o in OPENERS if not (label and o == "Sadly, ")])
    subject = rng.choice(SUBJECTS)
    text = f"{opener}{subject} {opinion}."
    text = text[0].upper() + text[1:]
    return f"{text} {tail}".strip()


def main() -> None:
    rng = random.Random(20261123)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    while len(rows) < 1000:
        label = rng.randint(0, 1)
        text = make_row(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append((text, "positive" if label else "negative"))
    for name, part in (("train", rows[:700]), ("val", rows[700:850]), ("test", rows[850:])):
        with (out / f"reviews_{name}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(part)


if __name__ == "__main__":
    main()
