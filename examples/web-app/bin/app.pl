#!/usr/bin/perl
# bgci sample web app: a tiny pre-forking HTTP/1.0-1.1 server (core Perl only).
#
#   GET /        -> 200 text/plain, the git sha from $APP_DIR/REVISION (or "unknown")
#   GET /health  -> 200 "ok"
#   GET /metrics -> 200 Prometheus text: webapp_requests_total{path,status} summed over
#                   the workers, process_start_time_seconds, webapp_info{revision}
#   anything else-> 404
#
# Environment:
#   WEB_APP_PORT           port to listen on (0.0.0.0), default 8000
#   WEB_APP_WORKERS        number of pre-forked workers, default 4
#   WEB_APP_FAIL_AT_START  if 1: print an error and exit 1 immediately
#   WEB_APP_ENV            only logged (production, jenkins, ...)
#   WEB_APP_FAIL_PATH      answer 500 to every path under this prefix (a planted fault)
#   WEB_APP_METRICS_DIR    where workers keep their request counts (default: a new temp dir)
#
# SIGTERM/SIGINT: the parent stops its workers (SIGKILL after 1 s) and exits 0.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";

use IO::Socket::INET;
use IO::Select;
use POSIX qw(WNOHANG strftime);
use Time::HiRes qw(time sleep);
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use WebApp;

$| = 1;
STDERR->autoflush(1);

if (($ENV{WEB_APP_FAIL_AT_START} // '') eq '1') {
    print STDERR "web-app: WEB_APP_FAIL_AT_START=1: refusing to start\n";
    exit 1;
}

my $PORT         = $ENV{WEB_APP_PORT}    || 8000;
my $WORKERS      = $ENV{WEB_APP_WORKERS} || 4;
my $READ_TIMEOUT = 10;       # seconds to receive the request head
my $MAX_HEAD     = 16384;    # bytes
my $STOP_GRACE   = 1;        # seconds before workers get SIGKILL

die "web-app: invalid WEB_APP_PORT '$PORT'\n"       unless $PORT    =~ /^\d+$/ && $PORT < 65536;
die "web-app: invalid WEB_APP_WORKERS '$WORKERS'\n" unless $WORKERS =~ /^\d+$/ && $WORKERS > 0;

# Request counts: each worker keeps its own in memory and writes them to its own file after
# each request (temp file + rename: a reader sees whole files); GET /metrics sums the files.
# A worker that dies leaves its file, so the sums never go down.
my $started     = time;
my $own_dir     = !$ENV{WEB_APP_METRICS_DIR};
my $METRICS_DIR = $ENV{WEB_APP_METRICS_DIR} || tempdir('web-app-metrics-XXXXXX', TMPDIR => 1);
my %counts;

sub write_counts {
    my $file = "$METRICS_DIR/worker-$$";
    open my $fh, '>', "$file.tmp" or return;
    print $fh "$_\t$counts{$_}\n" for keys %counts;
    close $fh or return;
    rename "$file.tmp", $file;
}

sub read_counts {
    my %sum;
    for my $file (glob "$METRICS_DIR/worker-*") {
        next if $file =~ /\.tmp\z/;
        open my $fh, '<', $file or next;
        while (my $line = <$fh>) {
            chomp $line;
            my ($path, $status, $n) = split /\t/, $line;
            $sum{"$path\t$status"} += $n if defined $n && $n =~ /^\d+$/;
        }
        close $fh;
    }
    return \%sum;
}

my $app = WebApp->new(app_dir => "$FindBin::Bin/..", counts => \&read_counts, started => $started,
                      fail_path => $ENV{WEB_APP_FAIL_PATH});

my $listen = IO::Socket::INET->new(
    LocalAddr => '0.0.0.0',
    LocalPort => $PORT,
    Proto     => 'tcp',
    Listen    => 128,
    ReuseAddr => 1,
) or do {
    print STDERR "web-app: cannot listen on 0.0.0.0:$PORT: $@\n";
    exit 1;
};

sub logline {
    my ($msg) = @_;
    my $t = time;
    my $ts = strftime('%Y-%m-%dT%H:%M:%S', gmtime $t) . sprintf('.%03dZ', ($t - int $t) * 1000);
    print "$ts [$$] $msg\n";
}

# ---------------------------------------------------------------- worker

sub worker_loop {
    my $stop = 0;
    $SIG{TERM} = $SIG{INT} = sub { $stop = 1 };
    $SIG{PIPE} = 'IGNORE';
    $SIG{CHLD} = 'DEFAULT';
    until ($stop) {
        my $client = $listen->accept;   # EINTR on SIGTERM -> loop checks $stop
        next unless $client;
        eval { handle($client); 1 } or logline("error: $@");
        close $client;
    }
    exit 0;
}

sub read_head {
    my ($client) = @_;
    my $sel = IO::Select->new($client);
    my $buf = '';
    my $deadline = time + $READ_TIMEOUT;
    while ($buf !~ /\r?\n\r?\n/) {
        my $left = $deadline - time;
        return (undef, 408) if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($client, $buf, 4096, length $buf);
        return (undef, undef) if !defined $n || $n == 0;   # client went away
        return (undef, 400) if length $buf > $MAX_HEAD;
    }
    return ($buf, undef);
}

sub handle {
    my ($client) = @_;
    my $peer = $client->peerhost // '-';
    my ($head, $err) = read_head($client);
    my ($method, $target, $proto) = ('-', '-', 'HTTP/1.0');
    my ($status, $headers, $body);

    if (defined $head) {
        my ($line) = split /\r?\n/, $head, 2;
        if ($line =~ m{^([A-Z]+) (\S+) (HTTP/1\.[01])$}) {
            ($method, $target, $proto) = ($1, $2, $3);
            ($status, $headers, $body) = eval { $app->route($method, $target) };
            ($status, $headers, $body) = WebApp::text(500, "internal error\n") unless defined $status;
        } else {
            ($status, $headers, $body) = WebApp::text(400, "bad request\n");
        }
    } elsif (defined $err) {
        ($status, $headers, $body) = WebApp::text($err, WebApp::reason($err) . "\n");
    } else {
        return;    # connection closed without a request
    }

    my $resp = "$proto $status " . WebApp::reason($status) . "\r\n";
    my @h = @$headers;
    while (my ($k, $v) = splice @h, 0, 2) { $resp .= "$k: $v\r\n" }
    $resp .= "Content-Length: " . length($body) . "\r\n";
    $resp .= "Connection: close\r\n\r\n";
    $resp .= $body unless $method eq 'HEAD';

    # Counted before the answer goes out: a client that reads /metrics right after its answer
    # must find its request counted, whichever worker serves it.
    $counts{ WebApp::path_label($target) . "\t$status" }++;
    write_counts();
    my $off = 0;
    while ($off < length $resp) {
        my $n = syswrite($client, $resp, length($resp) - $off, $off);
        last unless $n;
        $off += $n;
    }
    shutdown($client, 1);
    logline(sprintf '%s "%s %s %s" %d %d', $peer, $method, $target, $proto, $status, length $body);
}

# ---------------------------------------------------------------- parent

my %kids;
my $stopping = 0;

sub spawn {
    my $pid = fork;
    if (!defined $pid) {
        print STDERR "web-app: fork failed: $!\n";
        return;
    }
    if ($pid == 0) {
        worker_loop();
        exit 0;
    }
    $kids{$pid} = 1;
}

sub stop {
    my ($sig) = @_;
    return if $stopping++;
    logline("received SIG$sig, stopping " . scalar(keys %kids) . " workers");
    kill 'TERM', keys %kids;
}

$SIG{TERM} = $SIG{INT} = \&stop;
$SIG{PIPE} = 'IGNORE';

logline(sprintf 'web-app listening on 0.0.0.0:%d with %d workers (revision %s, env %s)',
    $PORT, $WORKERS, $app->revision, $ENV{WEB_APP_ENV} // '-');
spawn() for 1 .. $WORKERS;

until ($stopping) {
    my $pid = waitpid(-1, 0);    # signal handlers run while waiting
    if ($pid > 0 && delete $kids{$pid}) {
        next if $stopping;
        logline("worker $pid exited (status $?), respawning");
        sleep 0.1;
        spawn();
    } elsif ($pid < 0) {
        sleep 0.1;               # no children (fork failures): retry
        spawn() while !$stopping && keys(%kids) < $WORKERS;
    }
}

# Shutdown: workers got SIGTERM in stop(); give them $STOP_GRACE seconds.
my $deadline = time + $STOP_GRACE;
while (%kids && time < $deadline) {
    while ((my $pid = waitpid(-1, WNOHANG)) > 0) { delete $kids{$pid} }
    sleep 0.02 if %kids;
}
if (%kids) {
    kill 'KILL', keys %kids;
    while (%kids && (my $pid = waitpid(-1, 0)) > 0) { delete $kids{$pid} }
}
close $listen;
remove_tree($METRICS_DIR) if $own_dir;
logline("stopped");
exit 0;
