"""A split directory as trainers and the Hub read it: `curate export`.

    exporters   the formats, a dict of exporters (hf, parquet, jsonl, trl, verl): convert, then write whole
                (export_split), and the Hub upload (push_to_hub)
    trainers    the tables of the trl and verl formats: prompts rendered by a response template, SFT responses
                from a respond run, verl's reward columns
    card        the dataset card (README.md) of an hf export and the training notes of trl and verl exports
"""
