"""policy/classifiers"""
