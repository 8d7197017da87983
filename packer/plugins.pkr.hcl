# Packer 1.7 and newer fetch the Amazon plugin with `packer init packer/`.
# (Debian's packer 1.6 has it built in and does not know this block: the
# syntax check in CI reads ephemera.pkr.hcl alone; see README.)
packer {
  required_plugins {
    amazon = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
