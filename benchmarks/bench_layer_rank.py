"""Issue 27 points 2 and 3 on SmolLM2-135M-Instruct: layers ranked by separation vs by steering, checked
against an exhaustive sweep, and the steerability of the bundled sycophancy A/B items.

For each concept (sentiment from the bundled chat pairs; English vs French replies written here), a vector
is trained on every layer, :func:`steerlens.layer_report` is run without steering (separation only) and with
steering at 0.2 typical residual norms, and the effect ``metric(+s) - metric(-s)`` of every layer is swept at
s = 0.1 / 0.2 / 0.3 with ``sweep_layers`` on the relative vector, to see how far the rank-1 layer's effect is
from the best non-degenerate layer's. Slow on CPU (about 20 minutes a concept on a busy 2-core machine).

    python benchmarks/bench_layer_rank.py [--layers 9 13 16] [--concepts sentiment language sycophancy]
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd

import steerlens
from steerlens.analysis import relative_vector
from steerlens.evaluation import layer_report, plot_steerability, prob_share, steerability, sweep_layers
from steerlens.samples import caa_items, caa_pairs, chat_prompt
from steerlens.samples.bundled import ab_items, chat_contrast_pairs, neutral_chat_prompts

POSITIVE = [" good", " great", " wonderful", " lovely", " amazing", " fantastic", " nice", " beautiful", " fun"]
POSITIVE += [" happy", " pleasant", " enjoyable"]
NEGATIVE = [" bad", " terrible", " awful", " horrible", " boring", " sad", " disappointing", " ugly", " dull"]
NEGATIVE += [" unpleasant", " miserable", " annoying"]
JUDGEMENT = "It was really"
"""After each neutral chat prompt: the twenty-four judgement words hold 0.20 of the next-token probability
there (0.003 after "Honestly, it was", whose next token is " a")."""

# (user turn, English reply, French reply): 32 to train, 8 held out.
LANGUAGE = [
    (
        "What did you do today?",
        "I went to the market and bought some bread.",
        "Je suis allé au marché et j'ai acheté du pain.",
    ),
    ("How is the weather?", "It is sunny and warm this afternoon.", "Il fait beau et chaud cet après-midi."),
    ("Do you like music?", "Yes, I listen to music every evening.", "Oui, j'écoute de la musique tous les soirs."),
    (
        "Where do you live?",
        "I live in a small house near the river.",
        "J'habite dans une petite maison près de la rivière.",
    ),
    (
        "What is your favourite food?",
        "My favourite food is a warm bowl of soup.",
        "Mon plat préféré est un bol de soupe chaude.",
    ),
    ("Can you help me?", "Of course, I will be happy to help you.", "Bien sûr, je serai ravi de vous aider."),
    ("What time is it?", "It is almost eight o'clock in the morning.", "Il est presque huit heures du matin."),
    (
        "Tell me about your family.",
        "My family is small, but we are very close.",
        "Ma famille est petite, mais nous sommes très proches.",
    ),
    ("What are you reading?", "I am reading a novel about the sea.", "Je lis un roman sur la mer."),
    (
        "How was your trip?",
        "The trip was long, but the hotel was lovely.",
        "Le voyage était long, mais l'hôtel était charmant.",
    ),
    (
        "What should I cook tonight?",
        "You could make a simple pasta with tomatoes.",
        "Vous pourriez faire des pâtes simples aux tomates.",
    ),
    (
        "Describe your city.",
        "The city has old streets and many cafés.",
        "La ville a de vieilles rues et beaucoup de cafés.",
    ),
    ("Why are you tired?", "I did not sleep well last night.", "Je n'ai pas bien dormi la nuit dernière."),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "La capitale de l'Italie est Rome."),
    ("Do you have a pet?", "Yes, I have a black cat named Felix.", "Oui, j'ai un chat noir qui s'appelle Félix."),
    (
        "What do you do for work?",
        "I work as a teacher in a primary school.",
        "Je travaille comme professeur dans une école primaire.",
    ),
    ("Where is the station?", "The station is at the end of this street.", "La gare est au bout de cette rue."),
    ("How old is your brother?", "My brother is twelve years old.", "Mon frère a douze ans."),
    (
        "What did you eat for lunch?",
        "I ate a salad with cheese and apples.",
        "J'ai mangé une salade avec du fromage et des pommes.",
    ),
    ("Is the shop open?", "No, the shop is closed on Sundays.", "Non, le magasin est fermé le dimanche."),
    (
        "What is your plan for the weekend?",
        "I plan to visit my grandparents in the country.",
        "Je compte rendre visite à mes grands-parents à la campagne.",
    ),
    (
        "Can you recommend a film?",
        "I recommend an old comedy that makes everyone laugh.",
        "Je recommande une vieille comédie qui fait rire tout le monde.",
    ),
    (
        "How do I get to the museum?",
        "Take the bus and get off at the third stop.",
        "Prenez le bus et descendez au troisième arrêt.",
    ),
    (
        "What is in the garden?",
        "There are roses, apple trees and a small pond.",
        "Il y a des roses, des pommiers et un petit étang.",
    ),
    (
        "Why is the sky blue?",
        "Sunlight is scattered by the air, and blue light scatters most.",
        "La lumière du soleil est diffusée par l'air, et la lumière bleue l'est le plus.",
    ),
    (
        "What sport do you play?",
        "I play football with my friends on Saturdays.",
        "Je joue au football avec mes amis le samedi.",
    ),
    (
        "When does the concert start?",
        "The concert starts at nine in the evening.",
        "Le concert commence à neuf heures du soir.",
    ),
    (
        "How do you make tea?",
        "Boil the water, then let the leaves steep for three minutes.",
        "Faites bouillir l'eau, puis laissez infuser les feuilles trois minutes.",
    ),
    ("What colour is your car?", "My car is dark green and quite old.", "Ma voiture est vert foncé et assez vieille."),
    (
        "Where did you go on holiday?",
        "We went to the mountains and walked every day.",
        "Nous sommes allés à la montagne et nous avons marché tous les jours.",
    ),
    ("What is your name?", "My name is Claire, and I am a student.", "Je m'appelle Claire, et je suis étudiante."),
    (
        "Do you speak other languages?",
        "I speak a little Spanish and some German.",
        "Je parle un peu espagnol et un peu allemand.",
    ),
    (
        "What happened at the meeting?",
        "We talked about the budget for next year.",
        "Nous avons parlé du budget de l'année prochaine.",
    ),
    ("How is your mother?", "She is much better now, thank you.", "Elle va beaucoup mieux maintenant, merci."),
    (
        "What is the best season?",
        "I think spring is the best season of the year.",
        "Je pense que le printemps est la meilleure saison de l'année.",
    ),
    ("Where are my keys?", "Your keys are on the table in the kitchen.", "Vos clés sont sur la table de la cuisine."),
    (
        "What did the doctor say?",
        "The doctor said I should rest for a week.",
        "Le médecin a dit que je devais me reposer une semaine.",
    ),
    ("How far is the beach?", "The beach is about ten minutes on foot.", "La plage est à environ dix minutes à pied."),
    ("What are you drinking?", "I am drinking a cup of hot chocolate.", "Je bois une tasse de chocolat chaud."),
    (
        "Why did you call?",
        "I called to ask if you are free tomorrow.",
        "J'ai appelé pour demander si tu es libre demain.",
    ),
]
LANGUAGE_PROMPTS = [user for user, _, _ in LANGUAGE[32:]] + [
    "What is your favourite book?",
    "How do you spend your mornings?",
    "What did you buy at the shop?",
    "Where is the nearest bakery?",
    "What is the weather like tomorrow?",
    "How was the dinner?",
    "Tell me about your school.",
    "What is your hobby?",
]
"""Held-out user turns: the reply's first word decides its language."""
FRENCH = ["Le", "La", "Les", "Je", "Il", "Mon", "Ma", "Un"]
ENGLISH = ["The", "I", "It", "My", "Yes", "We", "A", "There", "Sure", "Here", "This", "In"]


def concept(tok, name):
    """(training pairs, held-out pairs, prompts, metric) of a concept."""
    if name == "sentiment":
        prompts = [chat + JUDGEMENT for chat in neutral_chat_prompts(tok)[:16]]
        return (
            chat_contrast_pairs("sentiment", "train", tokenizer=tok),
            chat_contrast_pairs("sentiment", "test", tokenizer=tok)[:16],
            prompts,
            prob_share(POSITIVE, NEGATIVE),
        )
    pairs = [(chat_prompt(tok, u) + fr, chat_prompt(tok, u) + en) for u, en, fr in LANGUAGE]  # French positive
    return pairs[:32], pairs[32:], [chat_prompt(tok, u) for u in LANGUAGE_PROMPTS], prob_share(FRENCH, ENGLISH)


def rank_layers(model, tok, name, layers):
    pairs, held_out, prompts, metric = concept(tok, name)
    vec = steerlens.train_steering_vector(model, tok, pairs, layers=layers, batch_size=16)
    separation = layer_report(model, vec, held_out, tokenizer=tok)
    start = time.perf_counter()
    report = layer_report(model, vec, held_out, tokenizer=tok, prompts=prompts, metric=metric)
    print(f"\n## {name}: layer_report with steering in {time.perf_counter() - start:.0f}s")
    print("rank_by:", report.attrs["rank_by"])
    print("separation rank 1-5:", separation.sort_values("rank").layer.head(5).tolist())
    print("steering rank 1-5:  ", report.sort_values("rank").layer.head(5).tolist())
    columns = ["layer", "rank", "effect", "kl", "target_mass_minus", "target_mass_unsteered", "target_mass_plus"]
    print(
        report.sort_values("rank")[columns + ["degenerate", "separation_rank", "auc"]].round(3).to_string(index=False)
    )
    relative = relative_vector(model, vec, prompts, tokenizer=tok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep = sweep_layers(
            model, relative, prompts, multipliers=[-0.3, -0.2, -0.1, 0.1, 0.2, 0.3], metric=metric, tokenizer=tok
        )
    top, sep_top = int(report.attrs["best_layer"]), int(separation.attrs["best_layer"])
    for s in (0.1, 0.2, 0.3):
        plus = sweep[sweep.multiplier == s].set_index("layer")
        minus = sweep[sweep.multiplier == -s].set_index("layer")
        effect = (plus[metric.name] - minus[metric.name])[~(plus.degenerate | minus.degenerate)]
        print(
            f"s={s}: best non-degenerate layer {effect.idxmax()} ({effect.max():.3f}); steering rank 1, layer {top}: "
            f"{effect.get(top, float('nan')) / effect.max():.2f} of it; separation rank 1, layer {sep_top}: "
            f"{effect.get(sep_top, float('nan')) / effect.max():.2f}"
        )


def sycophancy(model, tok, layers):
    vec = steerlens.train_steering_vector(
        model, tok, caa_pairs(tok, ab_items("sycophancy", "train")), layers=layers, batch_size=16
    )
    relative = relative_vector(model, vec, neutral_chat_prompts(tok)[:16], tokenizer=tok)
    items = caa_items(tok, ab_items("sycophancy", "test"))
    table = steerability(model, relative, items, None, [-1.0, -0.5, 0.0, 0.5, 1.0], tokenizer=tok, steer_from="answer")
    print(f"\n## sycophancy: steerability of {len(items)} held-out items (logit difference, per residual norm)")
    print(pd.DataFrame(table.attrs["summary"]).T.round(3).to_string())
    plot_steerability(
        table, layer=max(table.attrs["summary"], key=lambda k: table.attrs["summary"][k]["mean_slope"])
    ).savefig("steerability_sycophancy.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="*", default=None, help="layers (default: all; sycophancy 6..18)")
    parser.add_argument("--concepts", nargs="*", default=["sentiment", "language", "sycophancy"])
    args = parser.parse_args()
    model, tok = steerlens.load_hf_model("smollm2-135m-instruct")
    for name in args.concepts:
        if name == "sycophancy":
            sycophancy(model, tok, args.layers or [6, 9, 12, 15, 18])
        else:
            rank_layers(model, tok, name, args.layers)


if __name__ == "__main__":
    main()
