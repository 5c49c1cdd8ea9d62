"""The text logic every serving path shares (the Python-backend models, the OpenAI API server, the
profiler): chat formats and stop words (``chat``), prompt encoding, request parsing and the stop-string
filter (``pipeline``), the incremental detokeniser (``detok``) and the reasoning/answer splitter
(``reasoning``). Imports only ``core``; numpy and transformers inside the functions that need them."""
