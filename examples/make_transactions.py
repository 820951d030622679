"""Generate the small card-transactions dataset that ships with headstart (examples/data/transactions_*.csv).

Each client has 6-40 purchases (day index, merchant category, channel, amount). The label says whether the
client "travels soon": it is 1 when the client's most recent purchases turn towards travel categories
(airline, hotel, car rental) at a rising spend, with 10% of labels flipped. Counting categories over the
whole history is not enough to find it (every client buys some travel), which is what a sequence encoder is
for; the order and recency of the events are. A fixed seed makes every rerun reproduce the committed files
byte for byte.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

CATEGORIES = ["grocery", "fuel", "restaurant", "pharmacy", "clothing", "electronics", "utilities", "cinema",
              "airline", "hotel", "car_rental"]
TRAVEL = {"airline", "hotel", "car_rental"}
CHANNELS = ["pos", "online", "contactless"]
SPLITS = {"train": 480, "val": 120, "test": 120}
OUT = Path(__file__).resolve().parent / "data"


def _client(rng: random.Random, travels: bool) -> list[tuple[int, str, str, float]]:
    n = rng.randint(6, 40)
    day, events = 0, []
    base = rng.uniform(8, 60)
    for i in range(n):
        day += rng.choice([0, 1, 1, 2, 3, 5, 8])
        late = i >= n - 5
        travel_p = 0.6 if (travels and late) else 0.08
        category = rng.choice(sorted(TRAVEL)) if rng.random() < travel_p else rng.choice(CATEGORIES[:8])
        scale = 1.0 + (0.35 * (i - (n - 5)) if travels and late else 0.0)
        amount = round(base * scale * rng.lognormvariate(0, 0.5) * (4 if category in TRAVEL else 1), 2)
        events.append((day, category, rng.choice(CHANNELS), amount))
    return events


def main() -> None:
    rng = random.Random(20261207)
    OUT.mkdir(parents=True, exist_ok=True)
    client = 1000
    for split, count in SPLITS.items():
        rows = []
        for _ in range(count):
            travels = rng.random() < 0.4
            label = int(travels) if rng.random() >= 0.1 else int(not travels)
            events = _client(rng, travels)
            rng.shuffle(events)  # files are not sorted by time: the reader sorts each client's events
            rows += [(client, day, cat, chan, f"{amt:.2f}", label) for day, cat, chan, amt in events]
            client += 1
        with open(OUT / f"transactions_{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["client_id", "day", "category", "channel", "amount", "travels_soon"])
            writer.writerows(rows)
        print(f"{split}: {count} clients, {len(rows)} transactions -> {OUT / f'transactions_{split}.csv'}")


if __name__ == "__main__":
    main()
