# Starts bin/app.pl on a free port and talks real HTTP to it.
use strict;
use warnings;
use Test::More;
use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

my $root = "$FindBin::Bin/..";
my $app  = "$root/bin/app.pl";

sub free_port {
    my $sock = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "cannot find a free port: $@";
    my $port = $sock->sockport;
    close $sock;
    return $port;
}

sub start_app {
    my (%env) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        $ENV{$_} = $env{$_} for keys %env;
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null' if $env{WEB_APP_FAIL_AT_START};
        exec $^X, $app or die "exec $app: $!";
    }
    return $pid;
}

sub wait_port {
    my ($port, $pid) = @_;
    my $deadline = time + 10;
    while (time < $deadline) {
        return 1 if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
        return 0 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    return 0;
}

sub expected_revision {
    open my $fh, '<', "$root/REVISION" or return 'unknown';
    my $line = <$fh> // '';
    $line =~ s/\s+//g;
    return length $line ? $line : 'unknown';
}

my $port = free_port();
my $pid  = start_app(WEB_APP_PORT => $port, WEB_APP_WORKERS => 2, WEB_APP_FAIL_AT_START => 0);
note "started $app (pid $pid) on 127.0.0.1:$port";
ok wait_port($port, $pid), 'app listens on a free port'
    or do { kill 'KILL', $pid; waitpid $pid, 0; done_testing; exit 1 };

my $base = "http://127.0.0.1:$port";
my $http = HTTP::Tiny->new(timeout => 10);

my $res = $http->get("$base/");
is $res->{status}, 200, 'GET / is 200';
is $res->{content}, expected_revision() . "\n", 'GET / returns the revision';
like $res->{headers}{'content-type'}, qr{^text/plain}, 'text/plain';
is $res->{headers}{connection}, 'close', 'Connection: close';
is $res->{headers}{'content-length'}, length($res->{content}), 'Content-Length';

$res = $http->get("$base/health");
is $res->{status}, 200, 'GET /health is 200';
is $res->{content}, "ok\n", 'GET /health says ok';

$res = $http->get("$base/does-not-exist");
is $res->{status}, 404, 'GET /does-not-exist is 404';

# an idle connection occupies one worker; another worker still answers
my $idle = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
ok $idle, 'opened an idle connection';
my $t0 = time;
$res = $http->get("$base/health");
is $res->{status}, 200, 'served concurrently with an idle connection';
cmp_ok time - $t0, '<', 5, 'without waiting for the idle one';
close $idle;

# HTTP/1.0 by hand
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
print $s "GET /health HTTP/1.0\r\n\r\n";
my $raw = do { local $/; <$s> };
like $raw, qr{\AHTTP/1\.0 200 OK\r\n}, 'HTTP/1.0 status line';
like $raw, qr{\r\n\r\nok\n\z}, 'HTTP/1.0 body';

# SIGTERM stops the whole process tree quickly
$t0 = time;
kill 'TERM', $pid;
my $reaped = 0;
while (time - $t0 < 5) {
    if (waitpid($pid, WNOHANG) == $pid) { $reaped = 1; last }
    sleep 0.02;
}
ok $reaped, 'app exited after SIGTERM';
is $? >> 8, 0, 'with exit status 0' if $reaped;
cmp_ok time - $t0, '<', 2, 'within 2 seconds';
ok !IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp'),
    'port is closed (no worker left behind)';
kill 'KILL', $pid unless $reaped;

# WEB_APP_FAIL_AT_START=1 exits 1 at once
my $fpid = start_app(WEB_APP_PORT => free_port(), WEB_APP_FAIL_AT_START => 1);
waitpid $fpid, 0;
is $? >> 8, 1, 'WEB_APP_FAIL_AT_START=1 exits with status 1';

done_testing;
