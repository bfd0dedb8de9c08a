"""How an embedder turns text into a vector, as data: presets, the e5 task table, sentence-transformers folders.

An ``EmbedConfig`` says which pooling (last token or mean), whether to L2-normalize, the maximum length,
the named prompts, and how queries are instructed.  It comes from one of three places, in this order
(``load_embedder`` in embed.py):

1. an explicit ``preset=`` name: ``PRESETS["e5-mistral" | "sfr-mistral" | "linq-mistral"]``;
2. a sentence-transformers folder (``modules.json``; both layouts of docs/references.md#sentence-transformers), read by ``read_st_folder``;
3. the model's name (config.json ``_name_or_path``, else the folder name) matched by ``preset_for_name``.

The three presets share one recipe (docs/references.md#embedders): last-token pooling over ``BOS + text + EOS``, L2
normalization, queries prefixed ``"Instruct: {task}\\nQuery: "``, documents plain, 4096 tokens at most.
(Linq-Embed-Mistral is last-token too, per mteb's registration; "Linq uses mean pooling" is a myth.)

``TASKS`` holds the e5 authors' task definitions (microsoft/unilm ``e5/utils.py``
``get_task_def_by_task_name_and_type``), keyed by a short name usable as ``prompt_name=``.

Checked against sentence-transformers in tests/test_embed.py: folders it wrote (6.2) and an old-layout folder
written by hand load to their recipes and give its vectors, unsupported folders are refused, and the presets share
one recipe and are found by name.

next: embedder.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import EmbedderConfigError

INSTRUCTION_TEMPLATE = "Instruct: {instruction}\nQuery: "   # no space or newline beyond these (unilm, mteb)

# name -> task definition; the MTEB task each comes from is in the trailing comment.
TASKS: dict[str, str] = {
    # retrieval (queries get the prompt, documents none)
    "web_search_query": "Given a web search query, retrieve relevant passages that answer the query",  # MSMARCO
    "question_answering": "Given a question, retrieve Wikipedia passages that answer the question",    # NQ
    "multi_hop_question": "Given a multi-hop question, retrieve documents that can help answer the question",  # HotpotQA
    "financial_question": "Given a financial question, retrieve user replies that best answer the question",  # FiQA2018
    "fact_checking": "Given a claim, retrieve documents that support or refute the claim",                 # FEVER
    "climate_fact_checking": "Given a claim about climate change, retrieve documents that support or refute "
                             "the claim",                                                               # ClimateFEVER
    "scientific_claim": "Given a scientific claim, retrieve documents that support or refute the claim",   # SciFact
    "counter_argument": "Given a claim, find documents that refute the claim",                              # ArguAna
    "argument_retrieval": "Given a question, retrieve detailed and persuasive arguments that answer the "
                          "question",                                                                   # Touche2020
    "duplicate_question": "Given a question, retrieve questions that are semantically equivalent to the "
                          "given question",                                                             # QuoraRetrieval
    "stackexchange_duplicate": "Given a question, retrieve detailed question descriptions from Stackexchange "
                               "that are duplicates to the given question",                             # CQADupStack
    "entity_retrieval": "Given a query, retrieve relevant entity descriptions from DBPedia",               # DBPedia
    "medical_question": "Given a question, retrieve relevant documents that best answer the question",    # NFCorpus
    "covid_query": "Given a query on COVID-19, retrieve documents that answer the query",                  # TRECCOVID
    "citation_retrieval": "Given a scientific paper title, retrieve paper abstracts that are cited by the "
                          "given paper",                                                                # SCIDOCS
    # symmetric tasks (e5 puts the prompt on every input)
    "sts_query": "Retrieve semantically similar text.",                                                     # STS*
    "summarization_query": "Given a news summary, retrieve other semantically similar summaries",          # SummEval
    "bitext_query": "Retrieve parallel sentences.",                                                         # BitextMining
    "tweet_similarity": "Retrieve tweets that are semantically similar to the given tweet",               # TwitterSemEval2015
    "askubuntu_duplicates": "Retrieve duplicate questions from AskUbuntu forum",                           # AskUbuntuDupQuestions
    "stackoverflow_duplicates": "Retrieve duplicate questions from StackOverflow forum",                   # StackOverflowDupQuestions
    "related_papers": "Given a title of a scientific paper, retrieve the titles of other relevant papers", # SciDocsRR
    # classification (e5 also switches L2 normalization off for these: encode(..., normalize=False))
    "sentiment_classification": "Classify the sentiment of a given tweet as either positive, negative, or "
                                "neutral",                                                              # TweetSentimentExtraction
    "review_polarity": "Classify Amazon reviews into positive or negative sentiment",                      # AmazonPolarity
    "movie_review_sentiment": "Classify the sentiment expressed in the given movie review text from the "
                              "IMDB dataset",                                                           # Imdb
    "emotion_classification": "Classify the emotion expressed in the given Twitter message into one of the "
                              "six emotions: anger, fear, joy, love, sadness, and surprise",            # Emotion
    "toxicity_classification": "Classify the given comments as either toxic or not toxic",                # ToxicConversations
    "banking_intent": "Given a online banking query, find the corresponding intents",                      # Banking77
    "user_intent": "Given a user utterance as query, find the user intents",                               # MassiveIntent
    "user_scenario": "Given a user utterance as query, find the user scenarios",                           # MassiveScenario
    # clustering
    "topic_clustering": "Identify the topic or theme of the given news articles",                          # TwentyNewsgroups
    "reddit_clustering": "Identify the topic or theme of Reddit posts based on the titles",               # RedditClustering
    "stackexchange_clustering": "Identify the topic or theme of StackExchange posts based on the titles", # StackExchangeClustering
    "arxiv_clustering": "Identify the main and secondary category of Arxiv papers based on the titles and "
                        "abstracts",                                                                    # ArxivClusteringP2P
    "arxiv_title_clustering": "Identify the main and secondary category of Arxiv papers based on the "
                              "titles",                                                                 # ArxivClusteringS2S
}


@dataclass(frozen=True)
class EmbedConfig:
    """The recipe.  ``special_tokens="bos_eos"``: we build ``BOS + text + EOS`` ourselves (last-token models);
    ``"post_processor"``: whatever the folder's tokenizer.json post-processor adds (what sentence-transformers
    under transformers 5 would feed, used for mean-pooling folders)."""
    name: str                              # preset name, or "sentence-transformers"
    pooling: str = "lasttoken"             # "lasttoken" | "mean"
    normalize: bool = True
    max_length: int = 4096                 # tokens, specials included
    prompts: dict = field(default_factory=dict)    # prompt name -> literal prefix
    default_prompt_name: str | None = None
    include_prompt: bool = True            # False: prompt tokens are left out of the pooling (ST Pooling)
    special_tokens: str = "bos_eos"        # "bos_eos" | "post_processor"
    instruction_template: str = INSTRUCTION_TEMPLATE
    backbone: str = ""                     # sub-folder holding the weights ("" = the folder itself)
    source: str = "preset"                 # where the recipe was read, for messages and repr


def _preset(name: str) -> EmbedConfig:
    return EmbedConfig(name=name, prompts={k: INSTRUCTION_TEMPLATE.format(instruction=v) for k, v in TASKS.items()})


PRESETS: dict[str, EmbedConfig] = {n: _preset(n) for n in ("e5-mistral", "sfr-mistral", "linq-mistral")}
_NAME_HINTS = (("e5-mistral", "e5-mistral"), ("sfr-embedding", "sfr-mistral"), ("linq-embed", "linq-mistral"))


def get_preset(name: str) -> EmbedConfig:
    if name not in PRESETS:
        raise EmbedderConfigError(f"unknown embedder preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_for_name(name: str) -> EmbedConfig | None:
    """'intfloat/e5-mistral-7b-instruct', 'SFR-Embedding-Mistral', 'Linq-Embed-Mistral-Q4_0.gguf' -> preset."""
    low = name.lower()
    for hint, preset in _NAME_HINTS:
        if hint in low:
            return PRESETS[preset]
    return None


def _read_json(path: str) -> dict:
    from ..checkpoints.config_files import read_json
    return read_json(path, error=EmbedderConfigError)


def _pooling_mode(cfg: dict, path: str) -> tuple[str, bool]:
    """1_Pooling/config.json, old layout (one boolean per mode) or new (``pooling_mode``) -> (mode, include_prompt)."""
    if "pooling_mode" in cfg:                                # sentence-transformers >= 6
        modes = cfg["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:                                                    # "pooling_mode_lasttoken": true, ...
        modes = [k[len("pooling_mode_"):] for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
        modes = ["mean" if m == "mean_tokens" else m for m in modes]
    if len(modes) != 1 or modes[0] not in ("lasttoken", "mean"):
        raise EmbedderConfigError(f"{path}: pooling {modes} is not supported (only 'lasttoken' or 'mean', alone)")
    return modes[0], bool(cfg.get("include_prompt", True))


def read_st_folder(folder: str) -> EmbedConfig | None:
    """The recipe written by sentence-transformers (2.x-6.x layouts), or None when ``modules.json`` is absent."""
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_file):
        return None
    modules = _read_json(modules_file)
    kinds = [(m.get("type", "").rsplit(".", 1)[-1], m.get("path", "")) for m in modules]
    names = [k for k, _ in kinds]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise EmbedderConfigError(f"{modules_file}: modules {names} are not supported "
                                  "(expected Transformer, Pooling, optionally Normalize)")
    pooling_file = os.path.join(folder, kinds[1][1], "config.json")
    pooling, include_prompt = _pooling_mode(_read_json(pooling_file), pooling_file)
    st = os.path.join(folder, "config_sentence_transformers.json")
    st = _read_json(st) if os.path.isfile(st) else {}
    prompts = dict(st.get("prompts") or {})
    default = st.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise EmbedderConfigError(f"{folder}: default_prompt_name {default!r} is not among the prompts {list(prompts)}")
    backbone = os.path.join(folder, kinds[0][1])
    return EmbedConfig(name="sentence-transformers", pooling=pooling, normalize="Normalize" in names,
                       max_length=_max_length(folder, backbone), prompts=prompts, default_prompt_name=default,
                       include_prompt=include_prompt,
                       special_tokens="bos_eos" if pooling == "lasttoken" else "post_processor",
                       backbone=kinds[0][1], source=modules_file)


def _max_length(folder: str, backbone: str) -> int:
    """sentence_bert_config.json ``max_seq_length`` (old layout), else tokenizer_config.json ``model_max_length``
    (where sentence-transformers 6 keeps it), else the presets' 4096."""
    for path, key in ((os.path.join(backbone, "sentence_bert_config.json"), "max_seq_length"),
                      (os.path.join(folder, "sentence_bert_config.json"), "max_seq_length"),
                      (os.path.join(backbone, "tokenizer_config.json"), "model_max_length")):
        if os.path.isfile(path):
            value = _read_json(path).get(key)
            if isinstance(value, int) and 0 < value < 10**7:   # transformers writes 1e30 for "no limit"
                return value
    return 4096
