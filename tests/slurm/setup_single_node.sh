#!/usr/bin/env bash
# A one-node SLURM cluster with job accounting, on this machine, for the real-scheduler workflow test
# (tests/test_slurm.py). Needs root on Debian 12 (bookworm) with its package mirrors reachable; no systemd needed:
# the daemons are started directly. Safe to run again (it restarts the daemons with a fresh configuration).
#
#   sudo bash tests/slurm/setup_single_node.sh            # then: sinfo; sacctmgr show assoc
#
# What it sets up: munge (authentication), MariaDB + slurmdbd (accounting, so `sacct` knows finished jobs and the
# Snakemake executor stops polling them), slurmctld + slurmd with one node holding all of this machine's CPUs and
# most of its memory, in a partition named by $SLURM_TEST_PARTITION (default `gpu`, the paper profile's), and an
# account $SLURM_TEST_ACCOUNT (default `test`) for the current user. Everything runs as root (SlurmUser=root).
set -euo pipefail

PARTITION=${SLURM_TEST_PARTITION:-gpu}
ACCOUNT=${SLURM_TEST_ACCOUNT:-test}
CLUSTER=${SLURM_TEST_CLUSTER:-repro}
USER_NAME=$(id -un)
HOST=$(hostname -s)

if [ "$(id -u)" != 0 ]; then
  echo "setup_single_node.sh: must run as root (installs packages and starts daemons)" >&2
  exit 2
fi
if ! grep -q bookworm /etc/os-release 2>/dev/null; then
  echo "setup_single_node.sh: written for Debian 12 (bookworm); this is $(. /etc/os-release; echo "$PRETTY_NAME")" >&2
fi

# -- packages (about a minute on a fresh machine) -------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd slurm-client munge mariadb-server >/dev/null
fi

# -- stop whatever an earlier run started ------------------------------------------------------------------------
for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null || true; done
sleep 1

# -- munge --------------------------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

# -- MariaDB for slurmdbd -------------------------------------------------------------------------------------------
if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
  service mariadb start >/dev/null
fi
for _ in $(seq 30); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
DB_PASS=slurmdb
mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# -- configuration -------------------------------------------------------------------------------------------------
install -d -m 0755 /etc/slurm /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /run/slurm
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))

cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
EOF
chmod 0600 /etc/slurm/slurmdbd.conf

cat > /etc/slurm/slurm.conf <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# a small cluster: finished jobs stay visible to squeue for a while, sacct has them for good
MinJobAge=300
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# -- daemons and accounting ---------------------------------------------------------------------------------------
/usr/sbin/slurmdbd
for _ in $(seq 30); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 1; done
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=tests organization=tests >/dev/null 2>&1 || true
sacctmgr -i add user "$USER_NAME" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 30); do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  sleep 1
done
scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
sinfo -h -o "%P %D %c %m %T"
echo "account: $ACCOUNT  partition: $PARTITION  cluster: $CLUSTER"
