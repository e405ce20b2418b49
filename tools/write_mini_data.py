"""Write the embedded dataset `keras_scl_mini` (keras_scl/experiments/data/mini/*.jsonl).

The sentences are composed from hand-written parts below with Python's
`random.Random` (whose integer and choice streams are stable across Python
versions), then written once and shipped: the package reads the files, never
this script. Re-run it only to change the data:

    python tools/write_mini_data.py

Three tasks, each with a `train` and a `validation` split:

- `films`: film-review sentences, negative (0) or positive (1). Plain
  verdicts, negations ("not dull at all"), contrasts whose second clause
  decides ("the cast tries hard, but the script is a mess") and idioms.
- `shops`: the same kinds of sentences about shops, restaurants and
  deliveries; the transfer target for a `films` model (as Yelp-2 is for SST-2).
- `nli`: premise/hypothesis pairs about everyday scenes: entailment (0),
  neutral (1) or contradiction (2), in MNLI's label order.
"""

import json
import random
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "keras_scl" / "data" / "mini"
SIZES = {"train": 600, "validation": 400}

FILM_ASPECTS = {
    "acting": ("superb", "natural", "moving", "convincing", "magnetic"),
    "script": ("sharp", "witty", "clever", "tight", "smart"),
    "plot": ("gripping", "inventive", "engaging", "surprising", "absorbing"),
    "soundtrack": ("haunting", "lovely", "stirring", "memorable", "beautiful"),
    "pacing": ("brisk", "assured", "perfect", "lively", "confident"),
    "ending": ("satisfying", "moving", "powerful", "earned", "clever"),
    "dialogue": ("witty", "sharp", "natural", "funny", "quotable"),
    "camera work": ("gorgeous", "elegant", "striking", "inventive", "lovely"),
}
FILM_FLAWS = {
    "acting": ("wooden", "stiff", "flat", "hammy", "lifeless"),
    "script": ("clumsy", "lazy", "muddled", "thin", "clichéd"),
    "plot": ("predictable", "confusing", "tedious", "silly", "thin"),
    "soundtrack": ("grating", "forgettable", "intrusive", "bland", "shrill"),
    "pacing": ("sluggish", "uneven", "plodding", "slow", "draggy"),
    "ending": ("rushed", "limp", "baffling", "hollow", "lazy"),
    "dialogue": ("stilted", "corny", "awkward", "leaden", "clunky"),
    "camera work": ("shaky", "murky", "dull", "messy", "flat"),
}
FILM_IDIOMS = (
    (1, "I would gladly watch it again tomorrow."),
    (1, "Easily the best thing I have seen this year."),
    (1, "It stayed with me for days."),
    (1, "Worth every minute and every penny."),
    (1, "I laughed, I cried, I clapped at the end."),
    (1, "A small gem that deserves a bigger audience."),
    (0, "I want those two hours of my life back."),
    (0, "I checked my watch more than the screen."),
    (0, "Half the audience left before the end."),
    (0, "Not even the popcorn could save it."),
    (0, "A waste of a fine cast."),
    (0, "I nearly fell asleep twice."),
)
SHOP_ASPECTS = {
    "delivery": ("fast", "quick", "punctual", "early", "smooth"),
    "staff": ("friendly", "helpful", "polite", "kind", "attentive"),
    "food": ("delicious", "fresh", "tasty", "generous", "excellent"),
    "service": ("prompt", "friendly", "efficient", "warm", "excellent"),
    "packaging": ("neat", "sturdy", "careful", "tidy", "solid"),
    "price": ("fair", "reasonable", "honest", "modest", "great"),
    "product": ("solid", "reliable", "excellent", "sturdy", "perfect"),
    "room": ("clean", "quiet", "spotless", "cosy", "bright"),
}
SHOP_FLAWS = {
    "delivery": ("late", "slow", "delayed", "botched", "chaotic"),
    "staff": ("rude", "unhelpful", "careless", "dismissive", "grumpy"),
    "food": ("cold", "bland", "stale", "greasy", "undercooked"),
    "service": ("slow", "sloppy", "rude", "careless", "awful"),
    "packaging": ("torn", "flimsy", "damaged", "crushed", "soggy"),
    "price": ("steep", "outrageous", "absurd", "inflated", "unfair"),
    "product": ("broken", "flimsy", "faulty", "useless", "cheap"),
    "room": ("dirty", "noisy", "cramped", "smelly", "damp"),
}
SHOP_IDIOMS = (
    (1, "I will definitely order from them again."),
    (1, "Five stars, no hesitation."),
    (1, "Already recommended it to all my friends."),
    (1, "Exactly what I hoped for."),
    (1, "They went out of their way to help."),
    (1, "Our new favourite place in town."),
    (0, "Never again."),
    (0, "I asked for a refund the same day."),
    (0, "Save your money and go elsewhere."),
    (0, "Nobody answered my emails for a week."),
    (0, "It broke after two days."),
    (0, "We waited an hour and then gave up."),
)
OPENERS = ("", "", "", "Honestly, ", "Overall, ", "To be fair, ", "Frankly, ", "In short, ")
INTENSIFIERS = ("", "", "really ", "truly ", "quite ", "very ", "remarkably ")
SOFTENERS = ("at all", "in the least", "one bit")


def sentiment_sentence(rng, label, aspects, flaws, idioms, subject):
    """One review sentence with the given label; the construction is drawn at random."""
    good, bad = (aspects, flaws) if label == 1 else (flaws, aspects)
    kind = rng.choice(("plain", "plain", "pair", "negated", "contrast", "contrast", "idiom"))
    aspect = rng.choice(sorted(good))
    word = rng.choice(good[aspect])
    opener = rng.choice(OPENERS)
    if kind == "plain":
        sentence = f"the {aspect} is {rng.choice(INTENSIFIERS)}{word}."
    elif kind == "pair":
        second = rng.choice([a for a in sorted(good) if a != aspect])
        sentence = f"the {aspect} is {word} and the {second} is {rng.choice(good[second])}."
    elif kind == "negated":
        # "not <opposite>" carries the label: "the plot is not dull at all" is positive.
        sentence = f"the {aspect} is not {rng.choice(bad[aspect])} {rng.choice(SOFTENERS)}."
    elif kind == "contrast":
        # The clause after "but" decides; the first one points the other way.
        first = rng.choice([a for a in sorted(bad) if a != aspect])
        sentence = f"the {first} is {rng.choice(bad[first])}, but the {aspect} is {rng.choice(INTENSIFIERS)}{word}."
    else:
        return rng.choice([text for tag, text in idioms if tag == label])
    sentence = sentence.replace("the ", f"the {subject} " if rng.random() < 0.15 else "the ", 1)
    text = opener + sentence
    return text[0].upper() + text[1:]


PEOPLE = (
    # (premise subject, a more general subject, how the hypothesis refers back, a detail the premise leaves open)
    ("A young woman", "A person", "She", "is a teacher"),
    ("An old man", "Someone", "He", "is retired"),
    ("Two children", "Some kids", "They", "are twins"),
    ("A chef", "A cook", "The chef", "owns the restaurant"),
    ("A teenage boy", "A young person", "He", "is on holiday"),
    ("A woman in a red coat", "A woman", "She", "is a doctor"),
    ("A man with a beard", "A man", "He", "is a musician"),
    ("A group of students", "Several people", "They", "are studying history"),
    ("A nurse", "A person", "The nurse", "has just finished a night shift"),
    ("Two old friends", "Two people", "They", "have known each other since school"),
    ("A girl in a yellow dress", "A child", "She", "is seven years old"),
    ("A tall man", "Somebody", "He", "is a firefighter"),
)
ACTIVITIES = (
    # (premise, entailed, contradicting, left open): each hypothesis list holds alternatives
    ("is riding a bicycle through the park", ("is outdoors", "is on a bike", "is cycling"),
     ("is asleep in bed", "is sitting in a car", "is indoors"), ("is late for a meeting", "is riding home from work")),
    ("is cooking soup in a small kitchen", ("is making food", "is in a kitchen", "is cooking"),
     ("is swimming in a lake", "is asleep", "is outside in the snow"),
     ("is cooking for a party", "is following a recipe from a book")),
    ("is reading a newspaper on a bench", ("is reading", "is sitting down", "is looking at a newspaper"),
     ("is playing football", "is running", "is asleep"), ("is waiting for a friend", "is reading about politics")),
    ("is painting a fence in the garden", ("is working outside", "is holding a brush", "is painting"),
     ("is watching television indoors", "is asleep", "is swimming"),
     ("is being paid for the job", "is painting the fence white")),
    ("is playing the piano on a stage", ("is making music", "is playing an instrument", "is on a stage"),
     ("is washing dishes", "is asleep at home", "is playing the drums"),
     ("is nervous about the concert", "is a famous pianist")),
    ("is walking a dog along the beach", ("is near the sea", "is with an animal", "is walking"),
     ("is sitting in an office", "is riding a horse", "is asleep"), ("is walking a neighbour's dog", "is on holiday")),
    ("is carrying groceries up the stairs", ("is holding some bags", "is climbing stairs", "is carrying something"),
     ("is running a marathon", "is lying on a sofa", "is empty-handed"),
     ("is bringing dinner home", "lives on the top floor")),
    ("is fixing a car in a garage", ("is repairing a vehicle", "is working on a car", "is in a garage"),
     ("is flying a kite on a hill", "is driving on a motorway", "is asleep"),
     ("is fixing a friend's car", "is a trained mechanic")),
    ("is drinking coffee at a cafe table", ("is having a drink", "is sitting at a table", "is at a cafe"),
     ("is climbing a mountain", "is swimming", "is asleep at home"),
     ("is meeting someone for the first time", "is drinking an espresso")),
    ("is planting flowers in a window box", ("is gardening", "is handling plants", "is planting something"),
     ("is driving a bus", "is cutting down a tree", "is asleep"),
     ("is planting flowers for a wedding", "is planting roses")),
    ("is singing in the rain", ("is singing", "is outside", "is getting wet"),
     ("is indoors and dry", "is silent", "is sunbathing"), ("is happy", "is singing a famous song")),
    ("is buying bread at a bakery", ("is shopping", "is in a shop", "is buying food"),
     ("is at the dentist", "is swimming in a pool", "is baking bread at home"),
     ("is buying bread for breakfast", "goes to this bakery every day")),
    ("is writing a letter at a desk", ("is writing", "is sitting at a desk", "is holding a pen"),
     ("is skiing down a slope", "is dancing", "is asleep"),
     ("is writing to a relative", "is writing a love letter")),
    ("is waiting for a train on a platform", ("is at a station", "is waiting", "is standing on a platform"),
     ("is on a boat", "is asleep at home", "is riding a horse"),
     ("is going to visit family", "is waiting for a delayed train")),
)


def _agree(phrase, verb):
    return phrase.replace("is ", verb + " ", 1) if phrase.startswith("is ") else phrase


def nli_pair(rng, label):
    """A (premise, hypothesis) pair: 0 entailment, 1 neutral, 2 contradiction."""
    subject, general, pronoun, detail = rng.choice(PEOPLE)
    activity, entailed, contradicting, open_ended = rng.choice(ACTIVITIES)
    verb = "are" if pronoun == "They" or subject.startswith("Two") else "is"
    premise = f"{subject} {_agree(activity, verb)}."
    referent = rng.choice((general, pronoun))
    if label == 0:
        hypothesis = f"{referent} {_agree(rng.choice(entailed), verb)}."
    elif label == 1:
        hypothesis = f"{pronoun} {_agree(rng.choice(open_ended + (detail,)), verb)}."
    else:
        hypothesis = rng.choice((f"{referent} {_agree(rng.choice(contradicting), verb)}.", f"Nobody {activity}."))
    return premise, hypothesis


def examples(task, size, rng, seen):
    """`size` new examples with balanced labels; `seen` keeps splits from sharing a composed sentence."""
    rows = []
    num_classes = 3 if task == "nli" else 2
    while len(rows) < size:
        label = len(rows) % num_classes  # balanced classes, shuffled below
        if task == "nli":
            premise, hypothesis = nli_pair(rng, label)
            row = {"premise": premise, "hypothesis": hypothesis, "label": label}
            key = premise + hypothesis
        else:
            args = (FILM_ASPECTS, FILM_FLAWS, FILM_IDIOMS, "film's") if task == "films" else (
                SHOP_ASPECTS, SHOP_FLAWS, SHOP_IDIOMS, "shop's")
            row = {"text": sentiment_sentence(rng, label, *args), "label": label}
            key = row["text"]
        if key in seen and not key.endswith(tuple(text for _, text in FILM_IDIOMS + SHOP_IDIOMS)):
            continue
        seen.add(key)
        rows.append(row)
    rng.shuffle(rows)
    return rows


def main():
    rng = random.Random(20211)
    for task in ("films", "shops", "nli"):
        seen = set()
        for split, size in SIZES.items():
            rows = examples(task, size, rng, seen)
            with open(OUTPUT / f"{task}_{split}.jsonl", "w") as file:
                for index, row in enumerate(rows):
                    file.write(json.dumps({"idx": index, **row}) + "\n")
            print(f"{task}/{split}: {len(rows)} examples")


if __name__ == "__main__":
    main()
