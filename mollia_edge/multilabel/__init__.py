"""Multi-label tasks (``label --multi-label``): a text may carry several labels.

* :mod:`.labels`: label sets in seed and output cells, and their quality against gold;
* :mod:`.prompts`: one yes/no answer per label, every label's answers scored after the text's
  KV cells (exact sequence probabilities), and each label's probability that it applies;
* :mod:`.model`: the text annotator, MoLAM and the classifier per label (K binary problems);
* :mod:`.job`: the job, a driver over named stages.
"""
