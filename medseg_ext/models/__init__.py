"""Networks the pipelines need (U-Net family, small CNNs). Empty until a family pipeline lands."""
