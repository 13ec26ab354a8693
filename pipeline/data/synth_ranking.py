"""A synthetic retweet dataset for the ranking task (`pipe synth OUT --task ranking`).

Why: AMNL and its baselines need data whose answer is known: who would retweet what, and
why, so a head that reads images, words and the follow graph can be shown to learn what
a baseline cannot. Real JPEGs (the regression synth's objects, `synth.render`), no internet.

Design (defaults of `RankingSynthConfig`):

- 40 posting accounts, the first 8 "influencers", each with a topic (one of 6 of the
  regression synth's objects and signal words); 200 users (the accounts among them)
  follow 1 influencer and 3-6 other accounts.
- Taste: a user's topic is their influencer's topic with probability 0.85, else random
  (homophily: followers share their influential followee's taste).
- 480 image tweets by the accounts at random times over 60 days. An influencer tweets
  its own topic 60 % of the time; other accounts any topic. The image shows the tweet's
  topic object with probability 0.8 (else another object); the text names the topic's
  word with probability 0.8 (else another topic's word), independently, among 3-6 filler
  words: image and text each carry the topic, and together they carry it best.
- Retweets: each user sees every tweet of its followees and retweets it with
  probability sigmoid(-2.6 + 3.0 [topic = user's taste] + popularity[author]),
  popularity ~ N(0, 0.7) per account, 1-48 hours after posting.

What each head should learn: `popularity` only the author effect (the same order for every
user); `bpr` nothing transferable (every test tweet is new, so it has no factors: AUC ~0.5,
as in the paper); `vbpr` the taste through the image; `amnl` the taste through image and
text together (AMNL_i / `--ablate text`: image only, AMNL_d / `--ablate visual`: text
only, each noisier); the followee attention can carry an influencer's taste to a follower
with few training retweets (`--ablate followees` removes it).

Shapes (`--shape`, `SHAPES`): `default` as above; `followee`: 300 users, 60 accounts, 12
influencers, 1,500 tweets, tastes shared with the influencer with probability .95, an
influencer tweeting its own topic 80 % of the time, 2-4 other followees.

Files: `OUT/posts.parquet` (posts contract; score = log2(retweets + 1), `retweets`),
`OUT/images/*.jpg`, `OUT/interactions.parquet` (user_id, post_id, at),
`OUT/follows.parquet` (user_id, followee_id) and `OUT/signals.json` (the design, each
user's taste and influencer, each account's popularity).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError
from pipeline.data.synth import FILLER_WORDS, OBJECTS, SIGNAL_WORDS, START, render


@dataclass
class RankingSynthConfig:
    users: int = 200  # users (retweeters), the accounts among them
    accounts: int = 40  # users who post
    influencers: int = 8  # the first accounts: their followers share their taste
    topics: int = 6  # topics (object + word of the regression synth), at most 8
    follows: tuple[int, int] = (3, 6)  # other accounts each user follows, besides one influencer
    taste_share: float = 0.85  # probability a user's taste is its influencer's topic
    own_topic: float = 0.6  # probability an influencer tweets its own topic
    shows_topic: float = 0.8  # probability the image shows the tweet's topic object
    names_topic: float = 0.8  # probability the text names the tweet's topic word
    bias: float = -2.6  # retweet logit offset
    taste_effect: float = 3.0  # retweet logit for a tweet of the user's taste
    popularity_sd: float = 0.7  # sd of the per-account popularity logit
    days: int = 60  # tweets are posted over this many days


# `pipe synth --task ranking --shape NAME`: (config, posts when --posts is not given). `followee`
# (issue 19, shaped like the hidden dataset AMNL lost on): more users and tweets, and tastes
# driven by the influential followee (shared with probability .95; influencers tweet their topic 80 %).
SHAPES: dict[str, tuple[RankingSynthConfig, int]] = {
    "default": (RankingSynthConfig(), 480),
    "followee": (RankingSynthConfig(users=300, accounts=60, influencers=12, follows=(2, 4), taste_share=0.95,
                                    own_topic=0.8), 1500),
}


def _check(cfg: RankingSynthConfig, posts: int) -> None:
    if not 1 <= cfg.influencers <= cfg.accounts <= cfg.users:
        raise PipeError(f"synth ranking: need 1 <= influencers ({cfg.influencers}) <= accounts ({cfg.accounts}) "
                        f"<= users ({cfg.users})")
    if not 2 <= cfg.topics <= len(OBJECTS):
        raise PipeError(f"synth ranking: topics must be 2..{len(OBJECTS)}, got {cfg.topics}")
    if posts < cfg.accounts:
        raise PipeError(f"synth ranking: {posts} posts for {cfg.accounts} accounts; give at least one each")


def _other(k: int, n: int, rng: np.random.Generator) -> int:
    return int((k + rng.integers(1, n)) % n)


def synth(out: Path, posts: int = 480, image_size: int = 64, seed: int = 0,
          config: RankingSynthConfig | None = None) -> Path:
    """Write the dataset under `out`; returns the posts file."""
    cfg = config or RankingSynthConfig()
    _check(cfg, posts)
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    users = [f"u{i:04d}" for i in range(cfg.users)]  # accounts are the first `accounts` users
    infl_topic = rng.integers(0, cfg.topics, cfg.influencers)
    popularity = rng.normal(0, cfg.popularity_sd, cfg.accounts)

    follows, influencer_of, taste = [], [], []
    for u in range(cfg.users):
        infl = int(rng.integers(cfg.influencers))
        others = [a for a in range(cfg.influencers, cfg.accounts) if a != u]
        k = min(len(others), int(rng.integers(cfg.follows[0], cfg.follows[1] + 1)))
        followees = [infl] + sorted(int(a) for a in rng.choice(others, k, replace=False))
        follows += [(users[u], users[a]) for a in followees if a != u]
        influencer_of.append(infl)
        taste.append(int(infl_topic[infl]) if rng.random() < cfg.taste_share else int(rng.integers(cfg.topics)))
    followers: dict[int, list[int]] = {}
    for u, a in follows:
        followers.setdefault(int(a[1:]), []).append(int(u[1:]))

    authors = np.concatenate([np.arange(cfg.accounts), rng.integers(0, cfg.accounts, posts - cfg.accounts)])
    times = np.sort(rng.uniform(0, cfg.days * 86400, posts))
    rows, events = [], []
    for i, a in enumerate(rng.permutation(authors)):
        a = int(a)
        own = a < cfg.influencers and rng.random() < cfg.own_topic
        topic = int(infl_topic[a]) if own else int(rng.integers(cfg.topics))
        obj = topic if rng.random() < cfg.shows_topic else _other(topic, cfg.topics, rng)
        word = topic if rng.random() < cfg.names_topic else _other(topic, cfg.topics, rng)
        words = list(rng.choice(FILLER_WORDS, int(rng.integers(3, 7))))
        words.insert(int(rng.integers(len(words) + 1)), SIGNAL_WORDS[word])
        pid, at = f"t{i:05d}", START + timedelta(seconds=float(times[i]))
        render(obj, image_size, rng).save(out / "images" / f"{pid}.jpg", quality=90)
        n_rt = 0
        for u in followers.get(a, []):
            logit = cfg.bias + cfg.taste_effect * (taste[u] == topic) + popularity[a]
            if rng.random() < 1 / (1 + np.exp(-logit)):
                events.append((users[u], pid, at + timedelta(hours=float(rng.uniform(1, 48)))))
                n_rt += 1
        rows.append({"post_id": pid, "user_id": users[a], "posted_at": at, "image": f"images/{pid}.jpg",
                     "title": " ".join(words), "text": "", "score": float(np.log2(n_rt + 1)), "retweets": float(n_rt),
                     "topic": topic, "shows": obj, "names": word})
    df = pl.DataFrame(rows)
    df.drop("topic", "shows", "names").write_parquet(out / "posts.parquet")
    pl.DataFrame(events, schema={"user_id": pl.Utf8, "post_id": pl.Utf8, "at": pl.Datetime("us", "UTC")},
                 orient="row").write_parquet(out / "interactions.parquet")
    pl.DataFrame(follows, schema=["user_id", "followee_id"], orient="row").write_parquet(out / "follows.parquet")
    design = {"task": "ranking", "config": asdict(cfg), "posts": posts, "image_size": image_size, "seed": seed,
              "n_events": len(events), "topics": [OBJECTS[t][0] + " / " + SIGNAL_WORDS[t] for t in range(cfg.topics)],
              "users": {users[u]: {"taste": taste[u], "influencer": users[influencer_of[u]]} for u in range(cfg.users)},
              "accounts": {users[a]: {"popularity": round(float(popularity[a]), 4),
                                      "topic": int(infl_topic[a]) if a < cfg.influencers else None}
                           for a in range(cfg.accounts)},
              "tweets": df.select("post_id", "topic", "shows", "names").to_dicts()}
    (out / "signals.json").write_text(json.dumps(design, indent=1, default=str) + "\n")
    return out / "posts.parquet"
