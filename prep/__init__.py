"""Data preparation: raw interaction logs -> the MiniOneRec files (item.json, `.inter` splits, split
CSVs, info.txt), and the chunking of test files for parallel evaluation.

  interactions  the shared recipe (k-core, sliding windows, global time split) and the `.inter` files
  layout        where each file of a prepared dataset lives (ours: `DIR/item.json`; the original's:
                `<output_path>/<dataset>/<dataset>.item.json`; its SFT layout `data/Amazon/...`)
  amazon18      Amazon Review Data (2018) readers
  ml100k        MovieLens-100k from the recbole wheel
  convert       `.inter` + index.json + item.json -> split CSVs + info.txt
  shards        split a test CSV into per-process chunks and merge their predictions

The command lines are thin entry points: data/amazon18_data_process.py, convert_dataset.py, split.py
and merge.py (the original's names and flags), and data/prepare_ml100k.py.
"""
