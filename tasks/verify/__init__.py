"""Verifiers: which samples are correct (answers, chains, math, code in a sandbox, majority vote)."""
