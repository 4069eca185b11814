"""What a run reads: input rows from files, `datasets` folders, the Hub or `bundled:NAME`, made into items.

    readers   rows from .jsonl/.json/.parquet/.csv, a save_to_disk folder, a Hub id or a bundled dataset
    items     rows → validated items (id, question, reference, choices, domain, extra), bad rows refused or
              quarantined with their reasons, and the input's fingerprint (load_items)
    choices   multiple-choice options in every shape inputs hold them, as labelled {label, text} lists
"""
