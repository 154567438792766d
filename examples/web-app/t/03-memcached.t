# Like Test::TCP: start a private memcached on a free port, use it, stop it.
# memcached is only installed in the test image ([test] extra_packages).
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

my ($memcached) = grep { -x } map { "$_/memcached" }
    (split(/:/, $ENV{PATH} // ''), '/usr/bin', '/usr/sbin', '/usr/local/bin');
plan skip_all => 'memcached is not installed: run the suite in the test image ([test] extra_packages)'
    unless $memcached;

sub free_port {
    my $sock = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "cannot find a free port: $@";
    my $port = $sock->sockport;
    close $sock;
    return $port;
}

my $port = free_port();
my $pid = fork;
die "fork: $!" unless defined $pid;
if ($pid == 0) {
    # -u is required when running as root (e.g. in the container), ignored otherwise
    exec $memcached, '-U', '0', '-p', $port, '-l', '127.0.0.1', '-u', 'nobody', '-m', '16'
        or die "exec $memcached: $!";
}

my $sock;
my $deadline = time + 10;
while (time < $deadline) {
    $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') and last;
    last if waitpid($pid, WNOHANG) == $pid;
    sleep 0.05;
}
note "started $memcached (pid $pid) on 127.0.0.1:$port";
ok $sock, 'memcached listens on a free port'
    or do { kill 'KILL', $pid; waitpid $pid, 0; done_testing; exit 1 };

sub cmd {
    my ($line) = @_;
    print {$sock} $line;
    my $reply = <$sock>;
    return $reply;
}

my $key   = "bgci-sample-$$";
my $value = "hello from pid $$ at " . time;

like cmd("version\r\n"), qr/^VERSION \S+\r\n\z/, 'version';
is cmd("set $key 0 60 " . length($value) . "\r\n$value\r\n"), "STORED\r\n", 'set';
is cmd("get $key\r\n"), "VALUE $key 0 " . length($value) . "\r\n", 'get: VALUE line';
is scalar(<$sock>), "$value\r\n", 'get: the stored value';
is scalar(<$sock>), "END\r\n", 'get: END';
is cmd("delete $key\r\n"), "DELETED\r\n", 'delete';
is cmd("get $key\r\n"), "END\r\n", 'gone after delete';
close $sock;

kill 'TERM', $pid;
my $t0 = time;
until (waitpid($pid, WNOHANG) == $pid) {
    if (time - $t0 > 5) { kill 'KILL', $pid; waitpid $pid, 0; last }
    sleep 0.02;
}
pass 'memcached stopped';

done_testing;
