"""The head framework, below the papers in heads/: the contract every head answers
(`base.Head`), the torch head on the shared trainer (`torch_head`), explanations of a torch
model's attention (`explain`), and the family bases a paper builds on: ranking groups
(`ranking`), embedding outputs (`embedding`), windows over earlier posts (`window`) and
tabular features for the classical baselines (`tabular`)."""
