"""``python -m vitalssl.pretrain_vitaldb_ssl`` runs ``pretrain-vitaldb-ssl`` (so ``torchrun -m`` can launch it)."""

from .entry.cli import pretrain_vitaldb_ssl

if __name__ == "__main__":
    pretrain_vitaldb_ssl()
