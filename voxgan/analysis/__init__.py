"""Analysis of trained runs: sweep comparison, classifier training, discriminator features."""
