# Bakes an AMI with ephemera installed: the instances started from it
# encrypt their instance-store disks at first boot (ephemera.service), with
# the config and escrow key given in user-data (cloud-init/).
#
#   make deb
#   packer init packer/ && packer build packer/
#
# Base images (set these variables):
#   Debian 12:  source_ami_name = "debian-12-amd64-*", source_ami_owner = "136693071363", ssh_username = "admin"
#   Debian 13:  source_ami_name = "debian-13-amd64-*", source_ami_owner = "136693071363", ssh_username = "admin"
#   Ubuntu 24.04: source_ami_name = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*",
#               source_ami_owner = "099720109477", ssh_username = "ubuntu"
#   Amazon Linux 2023 (docs/AL2023.md): `make rpm`, then
#               -var source_ami_name="al2023-ami-2023.*-kernel-6.1-x86_64"
#               -var source_ami_owner=amazon -var ssh_username=ec2-user
#               -var package=target/rpm/ephemera-0.1.0-1.x86_64.rpm
#               (arm64: `make rpm-arm64`, "al2023-ami-2023.*-kernel-6.1-arm64",
#               the .aarch64.rpm, and the Graviton variables below).
#               install.sh installs the .rpm with dnf. -var unlock=true works there
#               (the tpm2 and kms pins); -var unlock_tang=true does not: AL2023 has
#               no clevis, and install.sh refuses.
#
# Reboots that keep the data ([unlock], docs/UNLOCK.md): -var unlock=true
# registers the AMI with NitroTPM and UEFI boot (and installs tpm2-tools on
# Debian, for the runbook); -var unlock_tang=true also installs clevis.
#
# Graviton (arm64): `make deb-arm64`, then
#   packer build -var architecture=arm64 -var instance_type=t4g.small \
#     -var source_ami_name="debian-12-arm64-*" -var deb=target/debian/ephemera_arm64.deb packer/

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "instance_type" {
  type        = string
  description = "Any type: the build instance needs no instance store."
  default     = "t3.small"
}

variable "source_ami_name" {
  type    = string
  default = "debian-12-amd64-*"
}

variable "source_ami_owner" {
  type    = string
  default = "136693071363"
}

variable "ssh_username" {
  type    = string
  default = "admin"
}

variable "architecture" {
  type        = string
  description = "The base image's architecture: x86_64, or arm64 for Graviton (with an arm64 instance_type, base image and deb)."
  default     = "x86_64"
}

variable "deb" {
  type        = string
  description = "The package made by `make deb` (used when `package` is not set)."
  default     = "target/debian/ephemera.deb"
}

variable "package" {
  type        = string
  description = "The package to install: a .deb (Debian, Ubuntu) or an .rpm (`make rpm`, Amazon Linux 2023); default: var.deb."
  default     = ""
}

locals {
  package = var.package != "" ? var.package : var.deb
  # install.sh picks apt-get or dnf by the file's name.
  package_file = length(regexall("\\.rpm$", local.package)) > 0 ? "/tmp/ephemera.rpm" : "/tmp/ephemera.deb"
}

variable "unlock" {
  type        = bool
  description = "For [unlock] (docs/UNLOCK.md): register the AMI with NitroTPM (TPM 2.0) and UEFI boot, which NitroTPM needs, and install tpm2-tools on Debian. The base image must support UEFI (Debian 12 and 13, and AL2023 AMIs do)."
  default     = false
}

variable "unlock_tang" {
  type        = bool
  description = "With unlock: also install clevis, which the tang pin runs (not on Amazon Linux 2023, which has no clevis)."
  default     = false
}

source "amazon-ebs" "ephemera" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = var.ssh_username
  ami_name      = "ephemera-{{timestamp}}"
  # NitroTPM for [unlock]: the AMI is registered with TPM 2.0 and UEFI boot.
  tpm_support = var.unlock ? "v2.0" : null
  boot_mode   = var.unlock ? "uefi" : null
  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      virtualization-type = "hvm"
      architecture        = var.architecture
      root-device-type    = "ebs"
    }
    owners      = [var.source_ami_owner]
    most_recent = true
  }
  tags = {
    Name = "ephemera"
  }
}

build {
  sources = ["source.amazon-ebs.ephemera"]

  provisioner "file" {
    source      = local.package
    destination = local.package_file
  }

  provisioner "file" {
    source      = "packer/install.sh"
    destination = "/tmp/install.sh"
  }

  provisioner "shell" {
    inline = ["sudo EPHEMERA_UNLOCK=${var.unlock ? (var.unlock_tang ? "tang" : 1) : 0} bash /tmp/install.sh ${local.package_file}"]
  }
}
