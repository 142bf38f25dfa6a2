"""Step 1 (the α, β, γ grid search) and step 2 (the φ sweep) of the paper's method, on real data."""
