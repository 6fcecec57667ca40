"""SID construction: item text -> embeddings -> residual quantiser -> collision-free semantic IDs.

Modules: embeddings (Hugging Face text encoders, one or several processes), rqkmeans (faiss
RQ-KMeans and k-means-constrained balanced RQ-KMeans), rqvae (RQ-VAE and RQ-KMeans+ with the
original's Sinkhorn collision repair), sids (codes -> index.json tokens, extra level, quality
report), sid_files (index.json + info.txt + sid_report.json replaced together). The driver is
rq/build_sids.py; the original's command lines (rqvae.py, generate_indices.py, rqkmeans_*.py,
generate_indices_plus.py, text2emb/amazon_text2emb.py and their .sh files) are thin entry points
over the same code.

The package name `rq` is also a PyPI project (Redis Queue); it is not a dependency here. Installing
it into the same environment would shadow this folder.
"""
