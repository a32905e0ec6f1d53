"""The procedural English corpus the toy model is trained on, and its vocabulary.

Every document is a short review with one *topic* (film, food or travel) and one
*sentiment* (positive or negative), drawn independently. The topic shows in the
nouns, the sentiment in adjectives, verbs and stock phrases, and both stay fixed
for the whole document, so the model has to carry a sentiment state and a topic
state in its residual stream: that is what a steering vector finds and moves.
Documents open with sentiment-free sentences, so prompts cut there are neutral.

Example:
    >>> rng = random.Random(0)
    >>> render_document(rng, topic="food", sentiment="positive")
    'Let me tell you about the soup. I loved the pasta. ...'
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

TOPICS: tuple[str, ...] = ("film", "food", "travel")
SENTIMENTS: tuple[str, ...] = ("positive", "negative")

# The first MEASURED_NOUNS nouns of each topic are the words that measure it.
TOPIC_NOUNS: dict[str, tuple[str, ...]] = {
    "film": (
        "film",
        "movie",
        "actor",
        "cinema",
        "director",
        "scene",
        "plot",
        "story",
        "ending",
        "cast",
        "music",
        "screen",
    ),
    "food": (
        "meal",
        "dinner",
        "soup",
        "restaurant",
        "chef",
        "pasta",
        "dessert",
        "bread",
        "menu",
        "waiter",
        "pizza",
        "salad",
    ),
    "travel": (
        "trip",
        "hotel",
        "flight",
        "beach",
        "train",
        "journey",
        "city",
        "guide",
        "airport",
        "island",
        "room",
        "tour",
    ),
}
MEASURED_NOUNS = 6

TOPIC_ACTIVITIES: dict[str, tuple[str, ...]] = {
    "film": (
        "watched a film",
        "went to the cinema",
        "saw a new movie",
        "watched a movie at home",
        "went to see a film",
    ),
    "food": (
        "had dinner at a restaurant",
        "cooked a big meal",
        "tried a new restaurant",
        "ate at a small cafe",
        "went out for dinner",
    ),
    "travel": (
        "went on a trip",
        "took a train to the coast",
        "stayed at a hotel by the sea",
        "flew to a new city",
        "went on a long journey",
    ),
}

# Adjectives are aligned by index so that contrast pairs swap like for like.
# The first MEASURED_ADJECTIVES of each list are the words that measure sentiment.
ADJECTIVES: dict[str, tuple[str, ...]] = {
    "positive": (
        "good",
        "great",
        "wonderful",
        "excellent",
        "lovely",
        "amazing",
        "fantastic",
        "brilliant",
        "perfect",
        "superb",
        "pleasant",
        "delightful",
    ),
    "negative": (
        "bad",
        "terrible",
        "awful",
        "horrible",
        "dreadful",
        "poor",
        "boring",
        "disappointing",
        "dull",
        "unpleasant",
        "nasty",
        "miserable",
    ),
}
MEASURED_ADJECTIVES = 8
VERBS: dict[str, tuple[str, ...]] = {
    "positive": ("loved", "enjoyed", "liked", "adored"),
    "negative": ("hated", "disliked", "regretted", "loathed"),
}
FEELINGS: dict[str, tuple[str, ...]] = {
    "positive": ("happy", "glad", "pleased", "delighted"),
    "negative": ("sad", "upset", "annoyed", "angry"),
}
VERDICTS: dict[str, tuple[str, ...]] = {
    "positive": (
        "I would happily go back",
        "I would recommend it to anyone",
        "I want to do it again soon",
        "It was worth every penny",
    ),
    "negative": (
        "I would never go back",
        "I would not recommend it to anyone",
        "I never want to do it again",
        "It was a waste of money",
    ),
}
INTENSIFIERS: tuple[str, ...] = ("", "", "", "really ", "very ", "so ", "quite ")
# Sentence openers that carry sentiment, so the sentiment matters at sentence starts too.
MARKERS: dict[str, tuple[str, ...]] = {
    "positive": ("Luckily", "Thankfully", "Best of all", "Happily"),
    "negative": ("Sadly", "Unfortunately", "Worst of all", "Even worse"),
}

# Sentences without topic or sentiment that may start a document.
PREFACES: tuple[str, ...] = (
    "It was a cold morning.",
    "I have some free time today.",
    "This will be a short post.",
    "My week was busy.",
    "I am writing this at home.",
    "It is late now.",
    "Here are my thoughts.",
    "I wrote this down quickly.",
    "It rained all day.",
    "I finally have a moment to write.",
    "This is my first post.",
    "My sister asked me to write this.",
)
# Openings that name the topic; "{N}" is a topic noun, "{X}" a topic activity, "{W}"
# a time. "{J}" is sometimes a sentiment adjective (never in neutral prompts): where
# a topic noun is due, the sentiment is then due too, so the model has to predict
# both at the same position and keep them apart.
OPENINGS_NOUN: tuple[str, ...] = (
    "Let me tell you about the {J}{N}.",
    "Here is my review of the {J}{N}.",
    "This is a note about the {J}{N}.",
    "My friend asked me about the {J}{N}.",
    "We talked about the {J}{N} for a while.",
    "I want to write about the {J}{N}.",
    "Today I will describe the {J}{N}.",
    "You asked me about the {J}{N}.",
)
OPENINGS_ACTIVITY: tuple[str, ...] = ("Last {W} we {X}.", "One {W} I {X}.", "A while ago we {X}.")
WHEN: tuple[str, ...] = ("week", "weekend", "night", "Monday", "Friday", "summer", "month", "Sunday")

# Sentence stems always followed by a (possibly intensified) adjective: ending a
# prompt at one makes the next word a sentiment word.
SENTIMENT_STEMS: tuple[str, ...] = (
    "The {N} was",
    "Honestly, it was",
    "Everyone said it was",
    "I thought the {N} was",
    "Overall, I think the {N} was",
    "In short, it was",
    "All in all, it was",
    "To be fair, the {N} was",
    "My friend said the {N} was",
    "I must say it was",
)
SENTIMENT_BODIES: tuple[str, ...] = (
    "The {N} was {A} and the {N2} was {A2}.",
    "It was {aA} {N}.",
    "I {V} the {J}{N}.",
    "I {V} every minute of it.",
    "We were {F} with the {N}.",
    "I felt {F} afterwards.",
    "{R}.",
    "The {N} looked {A}, and the {N2} was even more {A2}.",
    "What {aA} {N}!",
    "My {P} {V} it too.",
)
# Sentiment without a topic: documents that start with one ask for a topic noun
# while the sentiment is known, which teaches the model to keep the two apart.
MOOD_SENTENCES: tuple[str, ...] = (
    "I had {aA} time.",
    "What {aA} day it was.",
    "I am so {F} today.",
    "I feel {F} right now.",
    "This was {aA} week for me.",
    "I have {aA} story to share.",
    "My day was {A}.",
    "I woke up feeling {F}.",
    "It has been {aA} month.",
    "Things have been {A} lately.",
)
NEUTRAL_BODIES: tuple[str, ...] = (
    "We got there at {T}.",
    "It took about {K} hours.",
    "My {P} came with me.",
    "We saw the {J}{N} and the {N2}.",
    "There were many people at the {J}{N}.",
    "We talked about the {J}{N} on the way home.",
    "I took a photo of the {J}{N}.",
)
# Neutral sentences cut before their noun: there the next word is a topic noun or a
# sentiment adjective.
NEUTRAL_THE_STEMS: tuple[str, ...] = (
    "We saw the",
    "We talked about the",
    "There were many people at the",
    "I took a photo of the",
)
# Chance that a sentence of a review has the opposite sentiment (mixed reviews). It
# bounds how sure the model can be of the next sentiment word, and so the size of its
# sentiment feature: steering then acts at multipliers of a few units, not fractions.
MIXED = 0.15
PEOPLE: tuple[str, ...] = ("sister", "brother", "friend", "mother", "father", "cousin", "partner")
TIMES: tuple[str, ...] = ("noon", "six", "seven", "eight", "nine", "midnight")
COUNTS: tuple[str, ...] = ("two", "three", "four", "five")


def article(word: str) -> str:
    """``word`` with its indefinite article: ``article("awful") == "an awful"``."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def fill(template: str, rng: random.Random, topic: str, sentiment: str | None, adj: int | None = None) -> str:
    """Fill a template's slots with words of ``topic`` and ``sentiment``.

    With ``sentiment=None`` only sentiment-free slots exist (``{J}`` is empty). ``adj``
    fixes the index of the first adjective; the same ``rng`` state gives aligned
    choices for either sentiment (used for contrast pairs).
    """
    nouns = rng.sample(TOPIC_NOUNS[topic], 2)
    slots = {
        "N": nouns[0],
        "N2": nouns[1],
        "X": rng.choice(TOPIC_ACTIVITIES[topic]),
        "W": rng.choice(WHEN),
        "P": rng.choice(PEOPLE),
        "T": rng.choice(TIMES),
        "K": rng.choice(COUNTS),
        "J": "",
    }
    if sentiment is not None:
        words = ADJECTIVES[sentiment]
        i = rng.randrange(len(words)) if adj is None else adj
        slots.update(
            A=rng.choice(INTENSIFIERS) + words[i],
            A2=rng.choice(words),
            aA=article(words[i]),
            V=rng.choice(VERBS[sentiment]),
            F=rng.choice(FEELINGS[sentiment]),
            R=rng.choice(VERDICTS[sentiment]),
            J=rng.choice(words) + " " if rng.random() < 0.3 else "",
        )
    return template.format_map(slots)


def opening(rng: random.Random, topic: str, sentiment: str | None = None, preface: bool | None = None) -> str:
    """Start of a document: an optional preface, then a topic opening (sentiment-free if ``sentiment`` is None)."""
    if preface is None:
        preface = rng.random() < 0.4
    text = fill(rng.choice(OPENINGS_NOUN + OPENINGS_ACTIVITY), rng, topic, sentiment)
    return f"{rng.choice(PREFACES)} {text}" if preface else text


def sentiment_sentence(rng: random.Random, topic: str, sentiment: str) -> str:
    """A sentence that carries the sentiment, sometimes behind a sentiment marker."""
    if rng.random() < 0.5:
        text = fill(rng.choice(SENTIMENT_STEMS) + " {A}.", rng, topic, sentiment)
    else:
        text = fill(rng.choice(SENTIMENT_BODIES), rng, topic, sentiment)
    if rng.random() < 0.25:
        first = text if text.startswith("I ") else text[0].lower() + text[1:]
        text = f"{rng.choice(MARKERS[sentiment])}, {first}"
    return text


def render_document(rng: random.Random, topic: str | None = None, sentiment: str | None = None) -> str:
    """One review: a neutral opening (sometimes after a topic-free mood), then 2-4 sentences."""
    topic = topic or rng.choice(TOPICS)
    sentiment = sentiment or rng.choice(SENTIMENTS)
    other = SENTIMENTS[1 - SENTIMENTS.index(sentiment)]

    def mixed() -> str:
        return other if rng.random() < MIXED else sentiment

    if rng.random() < 0.45:
        mood = fill(rng.choice(MOOD_SENTENCES), rng, topic, sentiment)
        sentences = [mood, opening(rng, topic, mixed(), preface=False)]
    else:
        sentences = [opening(rng, topic, mixed())]
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.2:
            sentences.append(fill(rng.choice(NEUTRAL_BODIES), rng, topic, mixed()))
        else:
            sentences.append(sentiment_sentence(rng, topic, mixed()))
    return " ".join(sentences)


def iter_documents(seed: int) -> Iterator[str]:
    """An endless, reproducible stream of documents."""
    rng = random.Random(seed)
    while True:
        yield render_document(rng)


def measured(words: Sequence[str], n: int) -> list[str]:
    """The first ``n`` words with the leading space they have mid-sentence."""
    return [" " + w for w in words[:n]]
