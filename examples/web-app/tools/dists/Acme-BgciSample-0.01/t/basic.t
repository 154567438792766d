use strict;
use warnings;
use Test::More tests => 2;
use_ok('Acme::BgciSample');
is(Acme::BgciSample->VERSION, '0.01', 'version');
