"""A synthetic posts dataset with planted, documented signals (real JPEGs, no internet).

Why: the demo, the tests and the benchmarks need data whose answer is known, so that a
head that reads images, words and users can be shown to learn what a baseline cannot.

Planted score of a post by user u at time t (default `SynthConfig`):

    score = base[u]                          per-user level ~ N(6, 1.0): what HisAve captures
          + 1.5 * shows_object(u's object)   visual, user-conditional
          + 1.5 * has_word(u's word)         text, user-conditional
          + 0.5 * (t - start) / 365 days     mild upward time trend
          + category effect                  top-level category, evenly spaced in [-0.2, 0.2]
          + N(0, 0.3)                        noise

- 24 users by default (fewer below 960 posts: one per 40 posts, at least 2; `users=U`
  makes exactly U, each with a post, and needs `MIN_POSTS_PER_USER` posts per user), each posting at its own
  rate (weights uniform in [0.6, 1.4]), at uniformly random times over one year (2023).
- 8 visual objects, each a large (45-65 % of the side) shape with its own saturated
  colour and texture (red disc, green striped square, ...: `OBJECTS`), on a muted
  gradient background with noise and three small grey distractor shapes. Every post
  shows exactly one object: its user's lucky object with probability 0.5, otherwise one
  of the 7 others. Each user is given a lucky object (each object is lucky for 3 users),
  and only the user's own object raises the score: the same object on another user's
  post does nothing.
- 8 signal words (`SIGNAL_WORDS`), assigned to users the same way, independently of the
  objects; every post contains exactly one signal word (its user's with probability 0.5),
  placed at a random position in the title or the text, among 4-7 filler words from a
  vocabulary sized so that every word appears >= 5 times (from about 150 posts up).
  Variants that stress generalization (`pipe synth --text-words 6-16 --vocab 330
  --text-signal topic`): `text_words` filler words per post, a `vocab`-word filler
  vocabulary (letter-only pseudo-words beyond the 60 listed), and `text_signal="topic"`,
  where a user's lucky signal is a topic (`TOPICS`, 4 words each) named by any one of its
  words, so a model must tie four rarer words to one effect among many fillers (a text
  model that memorizes word combinations overfits here: issue 9).
- `modality_signal="mixed"` (`pipe synth --modality-signal mixed`, issue 19): users differ
  in which modality carries their signal. Half the users (`carrier` "image" in
  `signals.json`, drawn by a generator of its own so the rest of the data is the default's)
  get `object_effect + word_effect` from their lucky object and nothing from their lucky
  word; the other half ("text") the reverse. Posts still show an object and a signal word
  as above; only the score differs. A per-user choice of modality (UHAN's inter-attention,
  eqs 16-19) should help here; a fixed average of the two halves the carrying modality.
- Three-level categories (5 categories x 3 subcategories x 2 concepts); a user posts in
  a favourite category 70 % of the time. Tags: 2-4 of the concept's tags.
- `user_followers`: the user's follower count at posting time, log10 ~ 2 + 0.5 (base - 6),
  growing 30 % over the year (so it correlates with the user level, not with the bonus).
- `score` and consistent `views` / `days` (days since posting at a crawl 30 days after
  the last post; views = round((2^score - 1) * days)).
- Near-duplicates: 2 % of posts re-post an earlier post of the same user: an identical
  image file, the same object and word, one filler word changed, 1-48 h later, own noise.

Learnable as intended (measured once, 1,500 posts at 224 px, seed 0, random-weight VGG16
pool5 grids, 70/10/20 chronological split, test MSE): HisAve 1.29; a small user-guided
attention model over regions and words 0.58, without user 1.87, without visual 0.87,
without text 1.12. It needed regularisation (dropout 0.5 on grid and word inputs, weight
decay 0.01, lr 3e-3): unregularised it overfits the 49x512 grids (test 1.13).

Files written: `OUT/posts.parquet` (image paths relative to it), `OUT/images/*.jpg`,
`OUT/truth.parquet` (per post: base, shown object, lucky flags, trend, noise) and
`OUT/signals.json` (the design, `n_users` made, and each user's lucky object and word, which
modality carries its signal and the effects of each).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

from pipeline.core.errors import PipeError

DEFAULT_POSTS = 1500
DEFAULT_USERS = 24  # at 960 posts and more
MIN_POSTS_PER_USER = 10  # with fewer, a user's lucky object and word are hardly seen in training
# (name, RGB colour, shape, texture)
OBJECTS = [
    ("red disc", (230, 40, 40), "disc", "solid"),
    ("green striped square", (40, 200, 70), "square", "hstripes"),
    ("blue triangle", (40, 70, 235), "triangle", "solid"),
    ("yellow checkered disc", (245, 225, 40), "disc", "checker"),
    ("magenta square", (225, 40, 225), "square", "solid"),
    ("cyan striped triangle", (40, 225, 225), "triangle", "vstripes"),
    ("orange diamond", (250, 140, 20), "diamond", "solid"),
    ("white checkered diamond", (250, 250, 250), "diamond", "checker"),
]
SIGNAL_WORDS = ["sunset", "puppy", "festival", "mountain", "coffee", "wedding", "ocean", "guitar"]
FILLER_WORDS = (
    "the a my our this today new with day photo time little morning evening light walk city "
    "friends family weekend summer winter spring autumn view street garden house park road "
    "lake river tree flowers sky cloud rain snow window table book music dinner lunch trip "
    "home old big small happy quiet bright dark green blue red yellow first last best"
).split()
CATEGORIES = {
    "nature": {"landscape": ["hills", "valley"], "plants": ["forest", "bloom"], "water": ["beach", "waterfall"]},
    "urban": {"architecture": ["tower", "bridge"], "streets": ["market", "traffic"], "night": ["neon", "skyline"]},
    "food": {"meals": ["pasta", "salad"], "drinks": ["latte", "cocktail"], "sweets": ["cake", "icecream"]},
    "people": {"portrait": ["smile", "selfie"], "events": ["concert", "party"], "sports": ["running", "football"]},
    "animals": {"pets": ["cat", "dog"], "wild": ["deer", "fox"], "birds": ["eagle", "owl"]},
}
# --text-signal topic: each signal is a topic of 4 words; a post names its topic by one of them
TOPICS = [["sunset", "dusk", "twilight", "sundown"], ["puppy", "pup", "doggy", "whelp"],
          ["festival", "carnival", "fair", "parade"], ["mountain", "peak", "summit", "ridge"],
          ["coffee", "espresso", "cappuccino", "brew"], ["wedding", "bride", "groom", "vows"],
          ["ocean", "sea", "waves", "surf"], ["guitar", "chords", "strings", "riff"]]
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70: pseudo-words beyond FILLER_WORDS
MODALITY_SIGNALS = ("both", "mixed")
START = datetime(2023, 1, 1, tzinfo=timezone.utc)
YEAR_S = 365 * 86400


@dataclass(frozen=True)
class SynthConfig:
    users: int | None = None  # exactly this many (>= 2); None: 24, fewer below 960 posts (one per 40, >= 2)
    base_mean: float = 6.0  # mean per-user level
    base_sd: float = 1.0  # spread of per-user levels (what HisAve captures)
    object_effect: float = 1.5  # score added when a post shows its user's lucky object
    word_effect: float = 1.5  # score added when a post contains its user's lucky word
    p_lucky: float = 0.5  # probability that a post shows its user's object (and, independently, word)
    trend_per_year: float = 0.5  # linear time trend over the year
    category_effect: float = 0.2  # top-level category effects spread evenly in [-x, x]
    noise_sd: float = 0.3  # Gaussian noise on the score
    near_duplicates: float = 0.02  # fraction of posts that re-post an earlier post
    follower_growth: float = 0.3  # relative follower growth over the year
    text_words: tuple[int, int] = (4, 7)  # filler words per post, drawn uniformly in [low, high]
    vocab: int | None = None  # filler vocabulary size; None: sized for ~15 uses per word, at most 60 words
    text_signal: str = "word"  # word: one fixed lucky word per user | topic: any of its lucky topic's 4 words
    modality_signal: str = "both"  # both: object and word count for every user | mixed: one of them per user


def _texture(kind: str, size: int, colour: tuple[int, int, int]) -> np.ndarray:
    """(S, S, 3) uint8 fill for an object: its colour, darkened in a texture's pattern."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(size // 8, 2)
    dark = {"solid": np.zeros((size, size), bool), "hstripes": (yy // period) % 2 == 1,
            "vstripes": (xx // period) % 2 == 1, "checker": ((yy // period) + (xx // period)) % 2 == 1}[kind]
    fill = np.empty((size, size, 3), np.uint8)
    fill[:] = colour
    fill[dark] = (np.array(colour) * 0.3).astype(np.uint8)
    return fill


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float], fill: int | tuple) -> None:
    x0, y0, x1, y1 = box
    if kind == "disc":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # diamond
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)], fill=fill)


def render(obj: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One image: muted gradient + noise, three small grey distractors, one large object."""
    c0, c1 = rng.uniform(70, 170, 3), rng.uniform(70, 170, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]  # (S, 1, 1)
    img = (c0 * (1 - t) + c1 * t).astype(np.float32) + 10 * rng.standard_normal((size, size, 3), dtype=np.float32)  # (S, S, 3)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        s, g = rng.uniform(0.08, 0.15) * size, int(rng.uniform(90, 170))
        x, y = rng.uniform(0, size - s, 2)
        _shape(draw, ["disc", "square", "triangle", "diamond"][rng.integers(4)], (x, y, x + s, y + s), (g, g, g))
    name, colour, shape, texture = OBJECTS[obj]
    s = int(rng.uniform(0.45, 0.65) * size)
    x, y = (int(v) for v in rng.uniform(0, size - s, 2))
    mask = Image.new("L", (s, s), 0)
    _shape(ImageDraw.Draw(mask), shape, (0, 0, s - 1, s - 1), 255)
    im.paste(Image.fromarray(_texture(texture, s, colour)), (x, y), mask)
    return im


def _assign(n_users: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each of n items lucky for about n_users / n users, in random order."""
    return rng.permutation(np.arange(n_users) % n)


def _other(lucky: int, n: int, rng: np.random.Generator) -> int:
    return int((lucky + rng.integers(1, n)) % n)


def n_users_for(posts: int, asked: int | None) -> int:
    """The users a dataset of `posts` gets: `asked` exactly, or PipeError naming the minimum."""
    if asked is None:
        return max(2, min(DEFAULT_USERS, posts // 40))
    if asked < 2:
        raise PipeError(f"synth needs at least 2 users (got --users {asked})")
    if posts < asked * MIN_POSTS_PER_USER:
        raise PipeError(f"--users {asked} needs at least {asked * MIN_POSTS_PER_USER} posts ({MIN_POSTS_PER_USER} per "
                        f"user); got {posts}: raise --posts or use --users {max(2, posts // MIN_POSTS_PER_USER)} or fewer")
    return asked


def _every_user_posts(users: np.ndarray, n_users: int) -> np.ndarray:
    """Each user the random draw left without a post takes one post of the busiest user, so
    `n_users` users really post (a no-op at default sizes: existing seeds keep their data)."""
    users = users.copy()
    for u in sorted(set(range(n_users)) - set(users.tolist())):
        busiest = int(np.bincount(users, minlength=n_users).argmax())
        users[int(np.flatnonzero(users == busiest)[-1])] = u
    return users


def filler_vocab(posts: int, cfg: SynthConfig) -> list[str]:
    """The filler words: `cfg.vocab` of them (FILLER_WORDS, then letter-only pseudo-words, so
    the tokens extractor keeps them), or by default about 15 uses per word, at most 60."""
    if cfg.vocab is None:
        return FILLER_WORDS[: int(np.clip(posts * 5.5 / 15, 8, len(FILLER_WORDS)))]
    if cfg.vocab < 1:
        raise PipeError(f"synth needs a vocabulary of at least 1 word (got --vocab {cfg.vocab})")
    signal = {w for t in TOPICS for w in t}
    extra = (a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES)
    words = FILLER_WORDS + [w for w in extra if w not in signal and w not in FILLER_WORDS][: max(cfg.vocab - 60, 0)]
    return words[: cfg.vocab]


def parse_text_words(text: str) -> tuple[int, int]:
    """`--text-words` "N" or "LOW-HIGH" -> (low, high)."""
    low, _, high = text.strip().partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise PipeError(f"--text-words {text!r}: expected N or LOW-HIGH, e.g. 6-16") from None


def check_config(cfg: SynthConfig) -> None:
    low, high = cfg.text_words
    if not 0 <= low <= high:
        raise PipeError(f"synth --text-words needs 0 <= low <= high (got {low}-{high})")
    if cfg.text_signal not in ("word", "topic"):
        raise PipeError(f"synth --text-signal takes word or topic (got {cfg.text_signal!r})")
    if cfg.modality_signal not in MODALITY_SIGNALS:
        raise PipeError(f"synth --modality-signal takes {' or '.join(MODALITY_SIGNALS)} (got {cfg.modality_signal!r})")


def carriers(n_users: int, seed: int, cfg: SynthConfig) -> list[str]:
    """Which modality carries each user's signal: "both" everywhere by default; for
    `mixed`, half "image" and half "text" in random order, from a generator of its own
    (so every other draw, and so the posts, are the default's)."""
    if cfg.modality_signal == "both":
        return ["both"] * n_users
    order = np.random.default_rng([seed, 2]).permutation(n_users)
    return ["image" if k % 2 == 0 else "text" for k in np.argsort(order)]


def effects(carrier: str, cfg: SynthConfig) -> tuple[float, float]:
    """(object effect, word effect) of a user whose signal `carrier` carries."""
    total = cfg.object_effect + cfg.word_effect
    return {"both": (cfg.object_effect, cfg.word_effect), "image": (total, 0.0), "text": (0.0, total)}[carrier]


def synth(out: Path, posts: int, image_size: int = 64, seed: int = 0, config: SynthConfig | None = None) -> Path:
    """Write the dataset under `out`; returns the posts file. Same seed -> same files."""
    cfg = config or SynthConfig()
    check_config(cfg)
    if posts < 2 or image_size < 8:
        raise PipeError(f"synth needs at least 2 posts and 8 px images (got {posts} posts, {image_size} px)")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_users = n_users_for(posts, cfg.users)
    n_obj, n_words = len(OBJECTS), len(SIGNAL_WORDS)
    base = rng.normal(cfg.base_mean, cfg.base_sd, n_users)
    lucky_obj, lucky_word = _assign(n_users, n_obj, rng), _assign(n_users, n_words, rng)
    activity = rng.uniform(0.6, 1.4, n_users)
    followers0 = 10 ** (2 + 0.5 * (base - cfg.base_mean) + rng.normal(0, 0.2, n_users))
    cats = list(CATEGORIES)
    favourite = rng.integers(len(cats), size=n_users)
    cat_effect = np.linspace(-cfg.category_effect, cfg.category_effect, len(cats))
    fillers = filler_vocab(posts, cfg)
    carrier = carriers(n_users, seed, cfg)

    users = _every_user_posts(rng.choice(n_users, size=posts, p=activity / activity.sum()), n_users)
    seconds = np.sort(rng.uniform(0, YEAR_S, posts))
    rows, truth = [], []
    for i in range(posts):
        u = int(users[i])
        hit_o, hit_w = rng.random() < cfg.p_lucky, rng.random() < cfg.p_lucky
        obj = int(lucky_obj[u]) if hit_o else _other(int(lucky_obj[u]), n_obj, rng)
        word = int(lucky_word[u]) if hit_w else _other(int(lucky_word[u]), n_words, rng)
        c = int(favourite[u]) if rng.random() < 0.7 else int(rng.integers(len(cats)))
        sub = list(CATEGORIES[cats[c]])[rng.integers(3)]
        concept = CATEGORIES[cats[c]][sub][rng.integers(2)]
        words = list(rng.choice(fillers, size=int(rng.integers(cfg.text_words[0], cfg.text_words[1] + 1))))
        said = SIGNAL_WORDS[word] if cfg.text_signal == "word" else str(rng.choice(TOPICS[word]))
        words.insert(int(rng.integers(len(words) + 1)), said)
        cut = int(rng.integers(2, 4))
        tags = [concept, sub, cats[c]][: int(rng.integers(2, 4))] + ([f"{concept}{rng.integers(3)}"] if rng.random() < 0.5 else [])
        img = f"images/p{i:05d}.jpg"
        rows.append(dict(post_id=f"p{i:05d}", user_id=f"u{u:02d}", t=float(seconds[i]), image=img,
                         title=" ".join(words[:cut]), text=" ".join(words[cut:]), tags=tags, category=cats[c],
                         subcategory=sub, concept=concept))
        truth.append(dict(post_id=f"p{i:05d}", base=float(base[u]), shown_object=OBJECTS[obj][0], object_hit=hit_o,
                          signal_word=said, word_hit=hit_w, category_effect=float(cat_effect[c]),
                          noise=float(rng.normal(0, cfg.noise_sd)), duplicate_of=None, obj=obj))

    # near-duplicates: a later post of the same user takes an earlier one's image, object and word
    n_dup = int(round(posts * cfg.near_duplicates))
    for i in sorted(rng.choice(np.arange(1, posts), size=min(n_dup, posts - 1), replace=False)):
        src = next((j for j in range(i - 1, -1, -1) if rows[j]["user_id"] == rows[i]["user_id"]), int(rng.integers(i)))
        r, s = rows[i], rows[src]
        words = (s["title"] + " " + s["text"]).split()
        k = next((j for j, w in enumerate(words) if w != truth[src]["signal_word"]), None)
        if k is not None:  # no filler words (--text-words 0): the text is the signal word alone
            words[k] = str(rng.choice([w for w in fillers if w != words[k]]))
        cut = len(s["title"].split())
        r.update(user_id=s["user_id"], t=s["t"] + float(rng.uniform(3600, 48 * 3600)), title=" ".join(words[:cut]),
                 text=" ".join(words[cut:]), tags=s["tags"], category=s["category"], subcategory=s["subcategory"],
                 concept=s["concept"])
        truth[i].update({k2: truth[src][k2] for k2 in ("base", "shown_object", "object_hit", "signal_word", "word_hit",
                                                       "category_effect", "obj")}, duplicate_of=s["post_id"])
        truth[i]["seed_image"] = truth[src].get("seed_image", src)  # a re-post of a re-post: the same image

    crawl = max(r["t"] for r in rows) + 30 * 86400
    image_rngs = np.random.SeedSequence([seed, 1]).spawn(posts)
    for i, (r, tr) in enumerate(zip(rows, truth)):
        year = min(r["t"], YEAR_S) / YEAR_S
        tr["trend"] = cfg.trend_per_year * year
        u = int(r["user_id"][1:])
        obj_effect, word_effect = effects(carrier[u], cfg)
        score = (tr["base"] + obj_effect * tr["object_hit"] + word_effect * tr["word_hit"]
                 + tr["trend"] + tr["category_effect"] + tr["noise"])
        days = (crawl - r["t"]) / 86400
        r.update(score=score, days=days, views=float(round((2 ** score - 1) * days)),
                 user_followers=float(round(followers0[u] * (1 + cfg.follower_growth * year))))
        src = tr.pop("seed_image", i)
        render(tr.pop("obj"), image_size, np.random.default_rng(image_rngs[src])).save(out / r["image"], quality=90)

    df = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        posted_at=((pl.col("t") + START.timestamp()) * 1e6).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    ).select("post_id", "user_id", "posted_at", "image", "title", "text", "tags", "category", "subcategory",
             "concept", "score", "views", "days", "user_followers")
    df.write_parquet(out / "posts.parquet")
    pl.DataFrame(truth, infer_schema_length=None).write_parquet(out / "truth.parquet")
    design = {"config": asdict(cfg), "posts": posts, "image_size": image_size, "seed": seed, "n_users": n_users, "users": {
        f"u{u:02d}": {"base": round(float(base[u]), 4), "lucky_object": OBJECTS[lucky_obj[u]][0],
                      "lucky_word": SIGNAL_WORDS[lucky_word[u]], "carrier": carrier[u],
                      "object_effect": effects(carrier[u], cfg)[0], "word_effect": effects(carrier[u], cfg)[1],
                      **({"lucky_topic": TOPICS[lucky_word[u]]} if cfg.text_signal == "topic" else {})}
        for u in range(n_users)}}
    (out / "signals.json").write_text(json.dumps(design, indent=2) + "\n")
    return out / "posts.parquet"
