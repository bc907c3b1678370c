"""Studies that compare ways of adapting: the fine-tuning strategies on one base (strategies.py) and the
adaptation study over conditions, sizes and seeds (adapt_study.py). One layer above training and reports."""
